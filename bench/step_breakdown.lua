-- bench/step_breakdown.lua: where one CPU training step of a config spends its
-- time, per kernel category (a benchmark, not a test). Uses lunar.profile (a
-- timer around every lunar.ops call) on engine:train_step over the config's
-- real train loader (loader:next is timed as "data loader": with PREFETCH, the
-- wait for the background batch plus the hand-over).
--
--   build/lunar bench/step_breakdown.lua --config configs/vit_fmnist.lua [precision=bf16] [MAX_STEPS=10]
--
-- ROUNDS rounds (env, default 3) of MAX_STEPS steps (default 10) each, after
-- WARMUP (env, default 3) untimed steps; each round first times MAX_STEPS plain
-- steps (the step's own time, no hook) and then MAX_STEPS profiled steps, so
-- both see the same load of a shared machine. Prints a table: per category
-- the median over rounds of ms per step and its share of the profiled step;
-- "other" is the profiled step minus the timed ops (Lua, tensor allocation and
-- frees, zero_grad, views). Then the plain and profiled step medians (the
-- hook's overhead), the same per lunar.ops function, and ONE JSON line starting with {"bench":"step_breakdown".
local setup = require('lunar.setup')
local config = require('lunar.config')
local json = require('lunar.json')
local profile = require('lunar.profile')

local overrides = {'LEARNING_RATE=1e-3', 'LABEL_SMOOTHING=0.1'}
for _, o in ipairs(lunar.args.overrides) do overrides[#overrides + 1] = o end
local cfg = config.load(lunar.args.config, overrides)
local steps = cfg.MAX_STEPS > 0 and cfg.MAX_STEPS or 10
local rounds = tonumber(os.getenv('ROUNDS') or '') or 3
local warmup = tonumber(os.getenv('WARMUP') or '') or 3
if cfg.device ~= 'cpu' then error('bench/step_breakdown.lua: CPU only (CUDA kernels are asynchronous)', 0) end
local run = setup.from_config(cfg, nil, {})
local engine, loader = run.engine, run.train_loader
engine:train()
loader:set_epoch(0)

local epoch = 0
local function next_batch()
  local x, y = loader:next()
  if not x then
    epoch = epoch + 1
    loader:set_epoch(epoch)
    x, y = loader:next()
  end
  return x, y
end

local median = require('lunar.profile').median

for _ = 1, warmup do
  local x, y = next_batch()
  engine:train_step(x, y)
  x:free(); y:free()
end

local plain, profiled, per_cat, per_op = {}, {}, {}, {}
for r = 1, rounds do
  local t0 = lunar.clock()
  for _ = 1, steps do
    local x, y = next_batch()
    engine:train_step(x, y)
    x:free(); y:free()
  end
  plain[r] = (lunar.clock() - t0) / steps
  local p = profile.start()
  t0 = lunar.clock()
  for _ = 1, steps do
    local x, y = p:region('data loader', next_batch)
    engine:train_step(x, y)
    x:free(); y:free()
  end
  profiled[r] = (lunar.clock() - t0) / steps
  local res = p:stop()
  local covered = 0
  for name, e in pairs(res.categories) do
    per_cat[name] = per_cat[name] or {}
    per_cat[name][r] = e.seconds / steps
    covered = covered + e.seconds / steps
  end
  for name, e in pairs(res.ops) do
    per_op[name] = per_op[name] or {}
    per_op[name][r] = e.seconds / steps
  end
  per_cat.other = per_cat.other or {}
  per_cat.other[r] = profiled[r] - covered
end

-- the machine's load (shared hosts): the 1-minute load average, when Linux says it
local function loadavg()
  local f = io.open('/proc/loadavg')
  if not f then return nil end
  local l = f:read('l')
  f:close()
  return tonumber(l:match('^(%S+)'))
end

local step = median(profiled)
local function sorted_rows(per)
  local rows = {}
  for name, t in pairs(per) do
    for r = 1, rounds do t[r] = t[r] or 0 end
    rows[#rows + 1] = {name = name, s = median(t)}
  end
  table.sort(rows, function(a, b) return a.s > b.s end)
  return rows
end
local rows = sorted_rows(per_cat)
print(string.format('%s, %s, batch %d, %d threads: %d rounds x %d steps (medians over rounds), load average %s',
  lunar.args.config or 'defaults', cfg.precision, cfg.BATCH_SIZE, lunar.num_threads(), rounds, steps,
  tostring(loadavg())))
print(string.format('%-16s %10s %8s', 'part', 'ms/step', 'share'))
local out = {bench = 'step_breakdown', config = lunar.args.config, precision = cfg.precision, batch = cfg.BATCH_SIZE,
  threads = lunar.num_threads(), rounds = rounds, steps = steps, parts_ms = {}, load_average = loadavg()}
for _, row in ipairs(rows) do
  print(string.format('%-16s %10.2f %7.1f%%', row.name, row.s * 1e3, 100 * row.s / step))
  out.parts_ms[row.name] = row.s * 1e3
end
print('per op (lunar.ops):')
out.ops_ms = {}
for _, row in ipairs(sorted_rows(per_op)) do
  print(string.format('  %-22s %10.2f %7.1f%%', row.name, row.s * 1e3, 100 * row.s / step))
  out.ops_ms[row.name] = row.s * 1e3
end
print(string.format('step: %.2f ms profiled, %.2f ms plain (hook overhead %.1f%%); %.1f img/s plain',
  step * 1e3, median(plain) * 1e3, 100 * (step / median(plain) - 1), cfg.BATCH_SIZE / median(plain)))
out.step_ms_profiled, out.step_ms_plain = step * 1e3, median(plain) * 1e3
out.images_per_s_plain = cfg.BATCH_SIZE / median(plain)
print(json.encode(out))
