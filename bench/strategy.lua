-- bench/strategy.lua: how good the strategy search's cost model is (issue 14,
-- "How good the model is, measured"): the search's strategies trained for a
-- few steps each, predicted against measured step time and peak memory.
--
--   mpirun -np 4 build/lunar profile --config C --out prof.json
--   mpirun -np 4 build/lunar bench/strategy.lua --config C [key=value ...] -- prof.json BUDGET [K] [STEPS] [global]
--   (global: only strategies whose blocks are all alike: every block checkpointed or none)
--
-- One job: the search runs on every rank (same answer everywhere), then up to K
-- (default 8) of the runnable strategies that fit BUDGET (the fastest, then
-- spread evenly over the ranked list) are built one after the other on the
-- job's ranks (lunar.setup with the strategy's config, no loaders: one
-- synthetic batch) and trained for 1 + STEPS (default 3) steps. Per strategy:
--   predicted   the search's step time and per-rank memory (lunar.memory's estimate of
--               the strategy's config, its most loaded rank)
--   reserved    the memory the search's knapsack reserved (from the profile; an upper bound)
--   measured    median step time (the slowest rank's), and the bytes in use after the
--               first step above what was in use before the setup (model state, the
--               batch) plus the peak of the timed steps above that, largest over ranks
-- and Spearman's rank correlation of predicted and measured step times. Figures
-- only; nothing is asserted (tests/lua/test_strategy.lua and
-- tests/mpi/test_strategy.sh test).
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local memory = require('lunar.memory')
local search = require('lunar.strategy.search')
local profile = require('lunar.strategy.profile')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local rest = lunar.args.rest or {}
local prof_path, budget_text = rest[1], rest[2]
if not prof_path or not budget_text then
  lunar.error('usage: mpirun -np N build/lunar bench/strategy.lua --config C -- PROFILE BUDGET [K] [STEPS]')
end
local K, STEPS = tonumber(rest[3] or 8), tonumber(rest[4] or 3)
local GLOBAL = rest[5] == 'global'      -- only global strategies (every block alike)
local budget = assert(memory.parse_bytes(budget_text))
local cfg = config.load(lunar.args.config, lunar.args.overrides)
local prof = profile.read(prof_path)
local res = search.run(cfg, prof, {world = W, budget = budget, global = GLOBAL})
local runnable = {}
for _, r in ipairs(res.ranked) do if r.runnable then runnable[#runnable + 1] = r end end
if #runnable == 0 then
  lunar.error(string.format('bench/strategy: no runnable %sstrategy fits %s (the smallest needs %s)',
    GLOBAL and 'global ' or '', memory.format_bytes(budget),
    res.smallest and memory.format_bytes(res.smallest.min_memory) or '?'))
end
local picked, seen = {}, {}
for i = 1, math.min(K, #runnable) do
  local j = #runnable <= K and i or (1 + math.floor((i - 1) * (#runnable - 1) / (K - 1) + 0.5))
  if not seen[j] then seen[j] = true; picked[#picked + 1] = runnable[j] end
end

local median = require('lunar.profile').median

local rows = {}
for _, r in ipairs(picked) do
  local c = config.from_table(search.strategy_config(cfg, r, budget), 'strategy')
  collectgarbage(); collectgarbage()
  local base = lunar.memory().bytes_in_use
  local img = {c.BATCH_SIZE, c.IN_CHANS}
  for _ = 1, c.IMG_DIMS do img[#img + 1] = c.IMG_SIZE end
  local x = lunar.empty(img):normal_(1, 'bench.strategy', 0, 1)     -- the batch counts (as predicted)
  local labels = {}
  for i = 1, c.BATCH_SIZE do labels[i] = i % c.NUM_CLASSES end
  local y = lunar.tensor(labels, 'i32')
  local g = parallel.initialize(c, world, {quiet = true})
  local run = setup.from_config(c, nil, {grid = g, loaders = false, quiet = true})
  run.engine:train_step(x, y)
  collectgarbage(); collectgarbage()
  local state = lunar.memory().bytes_in_use - base     -- model state and the batch, after one step
  lunar.reset_peak_memory()
  local in_use = lunar.memory().bytes_in_use
  local ts = {}
  for i = 1, STEPS do
    world:barrier()
    local t0 = lunar.clock()
    run.engine:train_step(x, y)
    ts[i] = world:all_reduce_number(lunar.clock() - t0, 'max')
  end
  local peak = world:all_reduce_number(state + lunar.memory().peak_bytes - in_use, 'max')
  local est = memory.estimate(c, {world = W}).max
  rows[#rows + 1] = {name = search.describe(r):gsub(': predicted.*', ''), pred_t = r.time, meas_t = median(ts),
    pred_m = r.estimate or est, res_m = r.max_memory, meas_m = peak}
  run, g = nil, nil
  x:free(); y:free()
  collectgarbage(); collectgarbage()
end

-- Spearman's rank correlation (average ranks for ties)
local function ranks(v)
  local idx = {}
  for i = 1, #v do idx[i] = i end
  table.sort(idx, function(a, b) return v[a] < v[b] end)
  local r, i = {}, 1
  while i <= #idx do
    local j = i
    while j < #idx and v[idx[j + 1]] == v[idx[i]] do j = j + 1 end
    for k = i, j do r[idx[k]] = (i + j) / 2 end
    i = j + 1
  end
  return r
end
local function spearman(a, b)
  local ra, rb = ranks(a), ranks(b)
  local n = #a
  local ma, mb = (n + 1) / 2, (n + 1) / 2
  local sab, saa, sbb = 0, 0, 0
  for i = 1, n do
    sab = sab + (ra[i] - ma) * (rb[i] - mb)
    saa = saa + (ra[i] - ma) ^ 2
    sbb = sbb + (rb[i] - mb) ^ 2
  end
  return sab / math.sqrt(saa * sbb)
end

if R == 0 then
  local MiB = 2 ^ 20
  print(string.format('%d ranks, budget %s, %d runnable strategies fit (%d combinations); %d trained, %d steps each',
    W, memory.format_bytes(budget), #runnable, res.considered, #rows, STEPS))
  print(string.format('%-96s %9s %9s %9s %9s %9s', 'strategy', 'pred s', 'meas s', 'pred MiB', 'rsrv MiB',
    'meas MiB'))
  local pt, mt = {}, {}
  local best_meas = math.huge
  for i, row in ipairs(rows) do
    pt[i], mt[i] = row.pred_t, row.meas_t
    best_meas = math.min(best_meas, row.meas_t)
    print(string.format('%-96s %9.4f %9.4f %9.2f %9.2f %9.2f', row.name, row.pred_t, row.meas_t, row.pred_m / MiB,
      row.res_m / MiB, row.meas_m / MiB))
  end
  local worst_mem = 0
  for _, row in ipairs(rows) do worst_mem = math.max(worst_mem, math.abs(row.pred_m / row.meas_m - 1)) end
  print(string.format('Spearman(predicted, measured step time) = %.2f; memory: worst |predicted / measured - 1| = ' ..
    '%.1f%%; the searched strategy (first row) measured %.2fx the fastest measured', #rows > 1 and spearman(pt, mt)
    or 0 / 0, 100 * worst_mem, rows[1].meas_t / best_meas))
end
