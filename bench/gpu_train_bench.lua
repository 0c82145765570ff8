-- bench/gpu_train_bench.lua: Lunar's half of bench/gpu_throughput (not a test).
-- Trains the config's ViT on one CUDA device, on one fixed random batch, and
-- prints ONE JSON line: median images/s over MAX_STEPS timed steps (after
-- WARMUP untimed ones), the model FLOP utilization against the device's dense
-- peak, and the device's peak memory. A timed step is zero_grad + forward +
-- loss + backward + AdamW step, ended by a device synchronization.
-- Precision: f32 storage with TF32 GEMMs (TF32=1, the default) or full f32
-- (TF32=0); or precision=bf16 (bf16 GEMMs with fp32 accumulation, fp32
-- master weights: nn.materialize), whose MFU is taken against the bf16 peak.
--   build/lunar bench/gpu_train_bench.lua --config configs/models/vit_b16.lua BATCH_SIZE=64 MAX_STEPS=20
--   build/lunar bench/gpu_train_bench.lua --config configs/models/vit_b16.lua precision=bf16
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local models = require('lunar.models')
local cjson = require('cjson')

local ok, why = lunar.cuda.is_available()
if not ok then error('gpu_train_bench: no CUDA device (' .. why .. ')', 0) end
local cfg = config.load(lunar.args.config, lunar.args.overrides)
local steps = cfg.MAX_STEPS > 0 and cfg.MAX_STEPS or 20
local warmup = tonumber(os.getenv('WARMUP') or '') or 3
local tf32 = (os.getenv('TF32') or '1') ~= '0'

lunar.cuda.set_tf32(tf32)
lunar.set_default_device('cuda')   -- parameters, gradients, optimizer state, activations
local bf16 = cfg.precision == 'bf16'   -- materialize refuses it on a device without bf16 GEMMs
local model = nn.materialize(models.vit(cfg), cfg.SEED, {init = cfg.INIT, precision = cfg.precision})
local params = model:parameters()
local criterion = nn.CrossEntropy{label_smoothing = 0.1}
local opt = optim.AdamW(params, {lr = 1e-3, weight_decay = cfg.WEIGHT_DECAY})

local shape = {cfg.BATCH_SIZE, cfg.IN_CHANS}
for _ = 1, cfg.IMG_DIMS do table.insert(shape, cfg.IMG_SIZE) end
local x = lunar.empty(shape):normal_(cfg.SEED, 'bench.images', 0, 1)
local yh = lunar.empty({cfg.BATCH_SIZE}, 'i32', 'cpu')
for i = 1, cfg.BATCH_SIZE do yh[i] = (i * 7) % cfg.NUM_CLASSES end
local y = yh:cuda()

lunar.cuda.synchronize()
lunar.cuda.reset_peak_memory()
local times, loss = {}, 0
for s = 1, warmup + steps do
  local t0 = lunar.clock()
  model:zero_grad()
  local logits, ctx = model:forward(x)
  local cctx
  loss, cctx = criterion:forward(logits, y)
  local dlogits = criterion:backward(cctx, 1)
  model:backward(ctx, dlogits)
  opt:step()
  dlogits:free(); logits:free()
  lunar.cuda.synchronize()
  if s > warmup then table.insert(times, lunar.clock() - t0) end
end
table.sort(times)
local median = times[(#times + 1) // 2]
local num_params = model:num_parameters()
local ips = cfg.BATCH_SIZE / median
local flops = models.vit_train_flops_per_image(cfg, num_params)

-- dense peaks (TFLOP/s) by device name; PEAK_TFLOPS overrides the one used
local name = lunar.cuda.device_name()
local peaks = {tf32 = 0, bf16 = 0, fp32 = 0}
if name:find('H100') or name:find('H200') or name:find('GH200') then
  peaks = {tf32 = 494.7, bf16 = 989.4, fp32 = 66.9}
elseif name:find('A100') then
  peaks = {tf32 = 156, bf16 = 312, fp32 = 19.5}
end
local used = bf16 and peaks.bf16 or tf32 and peaks.tf32 or peaks.fp32
if os.getenv('PEAK_TFLOPS') then used = tonumber(os.getenv('PEAK_TFLOPS')) end
local achieved = ips * flops / 1e12
local mem = lunar.cuda.memory()
local body = cjson.encode{
  device = name, precision = bf16 and 'bf16 (fp32 master weights)' or tf32 and 'f32 (TF32 GEMMs)' or 'f32',
  images_per_s = ips, step_ms_median = median * 1e3, step_ms_min = times[1] * 1e3,
  step_ms_max = times[#times] * 1e3, tflops_per_s = achieved,
  mfu = used > 0 and achieved / used or cjson.null, peak_tflops_used = used,
  mfu_vs_bf16_peak = peaks.bf16 > 0 and achieved / peaks.bf16 or cjson.null,
  peak_device_mb = mem.peak_bytes / 2^20, flops_per_image = flops, final_loss = loss,
  img = cfg.IMG_SIZE, patch = cfg.PATCH_SIZE, dim = cfg.HIDDEN_SIZE, depth = cfg.DEPTH,
  heads = cfg.NUM_HEADS, batch = cfg.BATCH_SIZE, params = num_params, steps = steps,
}
print('{"framework":"lunar",' .. body:sub(2))
