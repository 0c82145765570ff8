-- bench/lunar_train_bench.lua: Lunar's half of bench/vs_pytorch (CPU) and of
-- bench/gpu_throughput (device=cuda); not a test. Trains the config's ViT on
-- one fixed random batch and prints ONE JSON line: median images/s over
-- MAX_STEPS timed steps (after WARMUP untimed ones, default 3), the median
-- process CPU time per step (step_cpu_ms_median: all threads), achieved
-- FLOP/s and the model dims. A timed step is engine:train_step: zero_grad +
-- forward + loss + backward + AdamW step (lr 1e-3, label smoothing 0.1 as the
-- PyTorch peers; the command line may set LEARNING_RATE, LABEL_SMOOTHING),
-- ended on a GPU by a device synchronization. FLOPs per image: models.vit_train_flops_per_image.
--   on the CPU: the process's peak resident and tensor memory and the measured
--     SGEMM peak (lunar.sgemm_gflops);
--   on a GPU (config key device = 'cuda'): f32 with TF32 GEMMs (TF32=1, the
--     default) or full f32 (TF32=0), or precision=bf16 (bf16 GEMMs with fp32
--     accumulation, fp32 master weights); the device's peak memory, and the
--     model FLOP utilization against the device's dense peak for that
--     precision (H100/H200 and A100 known; PEAK_TFLOPS overrides).
--   build/lunar bench/lunar_train_bench.lua --config configs/vit_fmnist.lua MAX_STEPS=20
--   build/lunar bench/lunar_train_bench.lua --config configs/models/vit_b16.lua BATCH_SIZE=64 device=cuda precision=bf16
local setup = require('lunar.setup')
local config = require('lunar.config')
local json = require('lunar.json')

-- the peers' optimizer settings first, so that the command line's win
local overrides = {'LEARNING_RATE=1e-3', 'LABEL_SMOOTHING=0.1'}
for _, o in ipairs(lunar.args.overrides) do overrides[#overrides + 1] = o end
local cfg = config.load(lunar.args.config, overrides)
local steps = cfg.MAX_STEPS > 0 and cfg.MAX_STEPS or 20
local warmup = tonumber(os.getenv('WARMUP') or '') or 3
local gpu = cfg.device ~= 'cpu'
local tf32 = gpu and (os.getenv('TF32') or '1') ~= '0'
local bf16 = cfg.precision == 'bf16'
if gpu then lunar.cuda.set_tf32(tf32) end
-- one rank: the model, AdamW and the engine (cfg.device becomes the default device)
local run = setup.from_config(cfg, nil, {loaders = false})
local engine = run.engine

local shape = {cfg.BATCH_SIZE, cfg.IN_CHANS}
for _ = 1, cfg.IMG_DIMS do table.insert(shape, cfg.IMG_SIZE) end
local x = lunar.empty(shape):normal_(cfg.SEED, 'bench.images', 0, 1)
local yh = lunar.empty({cfg.BATCH_SIZE}, 'i32', 'cpu')
for i = 1, cfg.BATCH_SIZE do yh[i] = (i * 7) % cfg.NUM_CLASSES end
local y = yh:to(cfg.device)

if gpu then lunar.cuda.synchronize(); lunar.cuda.reset_peak_memory() end
local times, cpu_times, loss = {}, {}, 0
for s = 1, warmup + steps do
  local t0, c0 = lunar.clock(), os.clock()
  for _ = 1, cfg.gradient_accumulation do loss = engine:train_step(x, y) end   -- one optimizer step
  if gpu then lunar.cuda.synchronize() end
  if s > warmup then
    table.insert(times, lunar.clock() - t0)
    table.insert(cpu_times, os.clock() - c0)
  end
end
table.sort(times)
table.sort(cpu_times)
local median = times[(#times + 1) // 2]
local num_params = run.num_params
local ips = cfg.BATCH_SIZE * cfg.gradient_accumulation / median
local flops = run.flops_per_image

local out = {
  images_per_s = ips, step_ms_median = median * 1e3, step_ms_min = times[1] * 1e3,
  step_ms_max = times[#times] * 1e3,
  -- the process's CPU time per step, all threads (median): the work a step
  -- costs, steadier than its wall time on a host shared with other jobs
  -- (with OMP_WAIT_POLICY=PASSIVE, as bench/vs_pytorch runs it, waiting
  -- threads sleep and add nothing)
  step_cpu_ms_median = cpu_times[(#cpu_times + 1) // 2] * 1e3,
  gflops_per_s = ips * flops / 1e9, tflops_per_s = ips * flops / 1e12,
  flops_per_image = flops, final_loss = loss,
  img = cfg.IMG_SIZE, patch = cfg.PATCH_SIZE, chans = cfg.IN_CHANS, dim = cfg.HIDDEN_SIZE, depth = cfg.DEPTH,
  heads = cfg.NUM_HEADS, mlp_ratio = cfg.MLP_RATIO, classes = cfg.NUM_CLASSES, batch = cfg.BATCH_SIZE,
  params = num_params, steps = steps,
  precision = bf16 and 'bf16 (fp32 master weights)' or tf32 and 'f32 (TF32 GEMMs)' or 'f32',
}
if gpu then
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
  out.device = name
  out.mfu = used > 0 and out.tflops_per_s / used or json.null
  out.peak_tflops_used = used
  out.mfu_vs_bf16_peak = peaks.bf16 > 0 and out.tflops_per_s / peaks.bf16 or json.null
  out.peak_device_mb = lunar.cuda.memory().peak_bytes / 2^20
else
  local mem = lunar.memory()
  out.device = 'cpu'
  out.peak_rss_mb, out.peak_tensor_mb = mem.peak_rss_bytes / 2^20, mem.peak_bytes / 2^20
  out.sgemm_peak_gflops = lunar.sgemm_gflops(2048, 3)
  out.threads = lunar.num_threads()
end
-- the drivers look for a line that starts with {"framework":"lunar"
print('{"framework":"lunar",' .. json.encode(out):sub(2))
