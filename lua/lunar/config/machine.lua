--- lunar.config.machine: what a config asks of the machine it runs on.
local M = {}

--- Checks what a loaded config asks of this machine, which config.load does
-- not (a config is machine independent: `config show` reads a GPU recipe on a
-- laptop): device 'cuda' / 'cuda:N' needs that CUDA device (cuda:N with N
-- below the device count); precision = 'bf16' needs native bf16 kernels on
-- cfg.device (lunar.ops.bf16_supported: avx512_bf16 on the CPU, compute
-- capability 8.0 on CUDA). The training scripts call it before building
-- anything. Raises "config key 'device' is 'cuda', but <reason>" or "config
-- key 'precision' is 'bf16', but <reason>" (no position), else returns cfg.
-- @param cfg a config from config.load
function M.check_machine(cfg)
  local device = cfg.device or 'cpu'
  if device ~= 'cpu' then
    local ok, why = lunar.cuda.is_available()
    if not ok then
      lunar.error(string.format("config key 'device' is '%s', but no CUDA device is available (%s); use device = 'cpu' here",
        device, why))
    end
    local n, count = tonumber(device:match('^cuda:(%d+)$')), lunar.cuda.device_count()
    if n and n >= count then
      lunar.error(string.format("config key 'device' is '%s', but this machine has %d CUDA device%s (cuda:0%s)", device,
        count, count == 1 and '' or 's', count > 1 and (' to cuda:' .. (count - 1)) or ''))
    end
  end
  if cfg.precision == 'bf16' then
    local ok, why = lunar.ops.bf16_supported(cfg.device or 'cpu')
    if not ok then
      lunar.error(string.format("config key 'precision' is 'bf16', but %s; use precision = 'fp32' here", why))
    end
  end
  return cfg
end

return M
