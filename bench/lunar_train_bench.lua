-- bench/lunar_train_bench.lua: Lunar's half of bench/vs_pytorch (not a test).
-- Trains the config's ViT on one fixed random batch and prints ONE JSON line:
-- median images/s over MAX_STEPS timed steps (after 3 warm-up steps), the
-- process's peak resident memory, achieved GFLOP/s, the measured SGEMM peak and
-- the model dims. A timed step is zero_grad + forward + loss + backward + AdamW
-- step, as the PyTorch peer (bench/vs_pytorch_peer.py) times it.
--   build/lunar bench/lunar_train_bench.lua --config configs/vit_fmnist.lua MAX_STEPS=20
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local models = require('lunar.models')
local cjson = require('cjson')

local cfg = config.load(lunar.args.config, lunar.args.overrides)
local steps = cfg.MAX_STEPS > 0 and cfg.MAX_STEPS or 20
local warmup = 3

local model = nn.materialize(models.vit(cfg), cfg.SEED, {init = cfg.INIT})
local params = model:parameters()
local criterion = nn.CrossEntropy{label_smoothing = 0.1}
local opt = optim.AdamW(params, {lr = 1e-3, weight_decay = cfg.WEIGHT_DECAY})

local shape = {cfg.BATCH_SIZE, cfg.IN_CHANS}
for _ = 1, cfg.IMG_DIMS do table.insert(shape, cfg.IMG_SIZE) end
local x = lunar.empty(shape):normal_(cfg.SEED, 'bench.images', 0, 1)
local y = lunar.empty({cfg.BATCH_SIZE}, 'i32')
for i = 1, cfg.BATCH_SIZE do y[i] = (i * 7) % cfg.NUM_CLASSES end

local times = {}
for s = 1, warmup + steps do
  local t0 = lunar.clock()
  model:zero_grad()
  local logits, ctx = model:forward(x)
  local loss, cctx = criterion:forward(logits, y)
  local dlogits = criterion:backward(cctx, 1)
  model:backward(ctx, dlogits)
  opt:step()
  dlogits:free(); logits:free()
  if s > warmup then table.insert(times, lunar.clock() - t0) end
end
table.sort(times)
local median = times[(#times + 1) // 2]
local num_params = model:num_parameters()
local ips = cfg.BATCH_SIZE / median
local flops = models.vit_train_flops_per_image(cfg, num_params)
-- the driver looks for a line that starts with {"framework":"lunar"
local body = cjson.encode{
  images_per_s = ips, step_ms_median = median * 1e3,
  step_ms_min = times[1] * 1e3, step_ms_max = times[#times] * 1e3,
  peak_rss_mb = lunar.memory().peak_rss_bytes / 2^20, peak_tensor_mb = lunar.memory().peak_bytes / 2^20,
  gflops_per_s = ips * flops / 1e9, sgemm_peak_gflops = lunar.sgemm_gflops(2048, 3),
  img = cfg.IMG_SIZE, patch = cfg.PATCH_SIZE, chans = cfg.IN_CHANS, dim = cfg.HIDDEN_SIZE, depth = cfg.DEPTH,
  heads = cfg.NUM_HEADS, mlp_ratio = cfg.MLP_RATIO, classes = cfg.NUM_CLASSES, batch = cfg.BATCH_SIZE,
  params = num_params, threads = lunar.num_threads(), steps = steps,
}
print('{"framework":"lunar",' .. body:sub(2))
