-- tests/mpi/checkpoint_check.lua: checkpoints under real MPI ranks
-- (tests/mpi/test_checkpoint.sh runs it with mpirun -np 2, 4 and 8).
--
--   mpirun -np W build/lunar tests/mpi/checkpoint_check.lua DIR
--
-- For each layout (dp, tp, pp) whose product is W: a tiny ViT on synthetic
-- data with DROPOUT = 0.1 trains N steps straight; another run trains k
-- steps and saves to DIR (every rank calls checkpoint.save: barriers, the
-- shard of each writing rank, index.json and the rename by rank 0); a fresh
-- run of the same layout (other init) loads it and trains N - k more: its
-- losses must be bitwise those of the straight run, its final parameters
-- too. Then every rank loads the checkpoint into the plain single-rank model
-- (no grid: resharding into one rank) and finds the parameters gathered from
-- the saving run (parallel.gather_full_parameters), bitwise; and RESUME='auto'
-- through maybe_resume picks that checkpoint.
-- Also under sharded data parallelism (ZeRO-3 and ZeRO-2 over the data
-- group, tensor 2 x ZeRO-2, hybrid ZeRO-3 with group_size 2 on 4 ranks): the
-- shards saved as they are, the same checks; and at 4 ranks ZeRO-3 over data 4
-- -> tensor 2 x ZeRO-2 and back (parameters and AdamW moments bitwise, the
-- resumed run's losses within 1e-5 of the straight run's). Every rank prints
-- "rank R: checkpoint_check N passed, M failed"; a failure raises at the end.
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local data = require('lunar.data')
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local checkpoint = require('lunar.checkpoint')
local models = require('lunar.models')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local DIR = assert((lunar.args.rest or {})[1],
  'usage: checkpoint_check.lua DIR')
local N, K = 6, 4

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks (tests add their own path)
local checks = require('rank_checks').new('checkpoint_check', world)
local check = checks.check

local BASE = {
  DATASET = 'synthetic', NUM_SAMPLES = 40, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2, NUM_CLASSES = 4,
  HIDDEN_SIZE = 16, DEPTH = 4, NUM_HEADS = 4, BATCH_SIZE = 8, LEARNING_RATE = 1e-2, clip_grad_norm = 0.5,
  DROPOUT = 0.1, SEED = 5, PREFETCH = true, METRICS_FILE = '',
}

local function make_cfg(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'checkpoint_check')
end

local function new_run(cfg, g, init_seed)
  local ds = data.datasets(cfg)
  local loader = data.loader(ds, cfg, {train = true, rank = g.dp_rank, num_shards = g.dp_size})
  loader:set_epoch(0)
  -- the model (initialized from init_seed), AdamW and the engine, as the examples build them (constant lr)
  local run = setup.from_config(cfg, nil, {grid = g, loaders = false, seed = init_seed})
  run.engine:train()
  return {cfg = cfg, g = g, model = run.model, optimizer = run.optimizer, engine = run.engine, loader = loader, step = 0,
    zero = run.zero}
end

-- every parameter as a full tensor (under ZeRO-3 gathered for the call)
local function full_params(r)
  local function f() return parallel.gather_full_parameters(r.model, r.g) end
  if r.zero then return r.zero:with_full_parameters(f) end
  return f()
end

local function train(r, to)
  local losses = {}
  while r.step < to do
    local x, y = r.loader:next()
    if not x then
      r.loader:set_epoch((r.loader:position()) + 1)
      x, y = r.loader:next()
    end
    local loss = r.engine:train_step(x, y)
    x:free(); y:free()
    r.step = r.step + 1
    losses[#losses + 1] = loss
  end
  return losses
end

local function state_of(r)
  return {model = r.model, optimizer = r.optimizer, engine = r.engine, loader = r.loader, step = r.step,
    epoch = (r.loader:position()), config = r.cfg, grid = r.g}
end

local function bits_equal(a, b)
  local ta, tb = a:contiguous():view(-1):totable(), b:contiguous():view(-1):totable()
  if #ta ~= #tb then return false end
  for i = 1, #ta do if ta[i] ~= tb[i] then return false end end
  return true
end

local layouts = {}
-- {dp, tp, pp[, tensor mode]}: the 2D mode (lunar.parallel.tensor_2d) where W is 4, with dropout (each
-- element of a split activation draws its one-rank mask); its checkpoint also loads into tensor 1D over
-- the same ranks (and at -np 8 only 2.5d size 8 depth 2, whose depth replicas do not write, and 3d size
-- 8, without dropout: their tensor 1D continuation is x data 2, whose replicas draw other masks)
local LAYOUTS = {{W, 1, 1}, {1, W, 1}, {1, 1, W}, {W // 2, 2, 1}, {1, 2, W // 2}, {W // 2, 1, 2}, {1, 4, 1, '2d'}}
if W == 8 then LAYOUTS = {{1, 8, 1, '2.5d'}, {1, 8, 1, '3d'}} end
for _, l in ipairs(LAYOUTS) do
  local dp, tp, pp = l[1], l[2], l[3]
  local key = dp .. 'x' .. tp .. 'x' .. pp .. (l[4] or '')
  if dp * tp * pp == W and dp >= 1 and not layouts[key] then
    layouts[key] = true
    layouts[#layouts + 1] = l
  end
end

-- sharded data parallelism (lunar.parallel.zero): every rank saves its shards as they are
for _, l in ipairs({{W, 1, 1, 3}, {W, 1, 1, 2}, {W // 2, 2, 1, 2}, {W, 1, 1, {stage = 3, group_size = 2}}}) do
  if W <= 4 and l[1] * l[2] * l[3] == W and (type(l[4]) ~= 'table' or l[1] > 2) then layouts[#layouts + 1] = l end
end

for li, l in ipairs(layouts) do
  local dp, tp, pp = l[1], l[2], l[3]
  -- l[4]: a tensor mode (a string) or a ZeRO stage / {stage, group_size}
  local mode = type(l[4]) == 'string' and l[4] or nil
  local zero = type(l[4]) ~= 'string' and l[4] or nil
  local zs = type(zero) == 'table' and string.format('%d/%d', zero.stage, zero.group_size) or zero
  local name = string.format('dp %d tp %d pp %d%s%s', dp, tp, pp, mode and (' ' .. mode) or '',
    zs and (', zero ' .. zs) or '')
  local par = {data = dp, pipeline = pp, tensor = {mode = mode or (tp > 1 and '1d' or 'none'), size = tp,
    depth = mode == '2.5d' and 2 or nil}, zero = zero}
  local over = {parallel = par, DROPOUT = (mode and W > 4) and 0 or nil}
  local cfg = make_cfg(over)
  local g = parallel.initialize(cfg, world, {quiet = true})
  local dir = string.format('%s/layout%d', DIR, li)

  local a = new_run(cfg, g)
  local straight = train(a, N)
  local b = new_run(cfg, g)
  train(b, K)
  local path = checkpoint.save(dir, state_of(b))
  local saved_full, names = full_params(b)
  check(name .. ': save returns dir/step_K', path == dir .. '/step_' .. K, path)
  check(name .. ': latest finds it', checkpoint.latest(dir) == path)

  local c = new_run(cfg, g, cfg.SEED + 50)
  local info = checkpoint.maybe_resume(make_cfg({parallel = par, RESUME = 'auto', CHECKPOINT_DIR = dir,
    DROPOUT = over.DROPOUT}), state_of(c))
  check(name .. ": RESUME='auto' resumes step K", info and info.step == K)
  c.step = K
  local rest = train(c, N)
  local same = #rest == N - K
  for i = 1, N - K do same = same and rest[i] == straight[K + i] end
  check(name .. ': resumed losses are bitwise the straight run', same)
  local fa = full_params(a)
  local fc = full_params(c)
  local params_same = true
  for _, n in ipairs(names) do params_same = params_same and bits_equal(fa[n], fc[n]) end
  check(name .. ': final parameters are bitwise the straight run', params_same)

  -- resharding into one rank: the plain model, no grid, read by every rank alone
  local plain = nn.materialize(models.vit(cfg), cfg.SEED + 99)
  local popt = optim.AdamW(plain:parameters(), {lr = 1e-3})
  checkpoint.load(path, {model = plain, optimizer = popt, config = cfg})
  local ok_plain = true
  for _, p in ipairs(plain:parameters()) do ok_plain = ok_plain and bits_equal(p.param, saved_full[p.name]) end
  check(name .. ': loads into one rank (the plain model) with the gathered parameters', ok_plain)
  check(name .. ': optimizer step count restored on one rank', popt.t == K)
  if mode then
    -- into tensor 1D size 4 (x data 2 at -np 8; another split of every parameter): the gathered parameters
    -- bitwise, and the next steps' losses those of the straight run within 1e-6 (the layouts sum in
    -- other orders)
    local dp1 = W // 4                -- tensor 1d size 4 (the 4 heads), data W / 4 at the same global batch
    local cfg1 = make_cfg({parallel = {tensor = {mode = '1d', size = 4}, data = dp1}, DROPOUT = over.DROPOUT,
      BATCH_SIZE = BASE.BATCH_SIZE // dp1})
    local g1 = parallel.initialize(cfg1, world, {quiet = true})
    local d = new_run(cfg1, g1, cfg.SEED + 77)
    checkpoint.load(path, state_of(d))
    local fd = parallel.gather_full_parameters(d.model, g1)
    local same1 = true
    for _, n in ipairs(names) do same1 = same1 and bits_equal(fd[n], saved_full[n]) end
    check(name .. ': loads into tensor 1d size 4 with the gathered parameters', same1)
    d.step = K
    local more = train(d, N)
    local close = #more == N - K
    for i = 1, N - K do close = close and math.abs(more[i] - straight[K + i]) <= 1e-6 * math.abs(straight[K + i]) end
    check(name .. ': tensor 1d continues with the losses of the straight run (1e-6)', close,
      table.concat(more, ' ') .. ' vs ' .. table.concat(straight, ' ', K + 1))
  end
  world:barrier()
end

-- any sharded layout into any other: ZeRO-3 over data 4 -> tensor 2 x ZeRO-2 (data 2) and back. The
-- parameters arrive bitwise (gathered on both sides); the optimizer state too (each rank's AdamW moments,
-- gathered by loading the second layout's checkpoint into the plain model); the resumed run's losses follow
-- the straight ZeRO-3 run within 1e-5 relative (another layout sums in another order).
if W == 4 then
  local function layout(dp, tp, z)
    local par = {data = dp, pipeline = 1, tensor = {mode = tp > 1 and '1d' or 'none', size = tp}, zero = z}
    -- the same global batch of 16 on both layouts, no dropout (its masks depend on the rank's slice)
    local cfg = make_cfg({parallel = par, BATCH_SIZE = 16 // dp, DROPOUT = 0})
    return cfg, parallel.initialize(cfg, world, {quiet = true})
  end
  local function plain_of(path, cfg)
    local plain = nn.materialize(models.vit(cfg), cfg.SEED + 99)
    local popt = optim.AdamW(plain:parameters(), {lr = 1e-3})
    checkpoint.load(path, {model = plain, optimizer = popt, config = cfg})
    return plain, popt
  end
  local cfg3, g3 = layout(4, 1, 3)
  local a = new_run(cfg3, g3)
  local straight = train(a, N)
  local b = new_run(cfg3, g3)
  train(b, K)
  local p3 = checkpoint.save(DIR .. '/cross3', state_of(b))
  local full3 = full_params(b)
  local cfg2, g2 = layout(2, 2, 2)
  local c = new_run(cfg2, g2, cfg2.SEED + 7)
  checkpoint.load(p3, state_of(c))
  c.step = K
  local fc = full_params(c)
  local same = true
  for n, t in pairs(full3) do same = same and bits_equal(t, fc[n]) end
  check('zero 3 (data 4) -> tensor 2 x zero 2: parameters bitwise', same)
  local p2 = checkpoint.save(DIR .. '/cross2', state_of(c))
  local _, opt3 = plain_of(p3, cfg3)
  local _, opt2 = plain_of(p2, cfg2)
  check('zero 3 (data 4) -> tensor 2 x zero 2: AdamW moments bitwise',
    bits_equal(opt3.flat_m, opt2.flat_m) and bits_equal(opt3.flat_v, opt2.flat_v) and opt2.t == K)
  local rest = train(c, N)
  local worst = 0
  for i = 1, N - K do worst = math.max(worst, math.abs(rest[i] - straight[K + i]) / math.abs(straight[K + i])) end
  check(string.format('tensor 2 x zero 2 resumed from zero 3: losses within 1e-5 relative (worst %.2g)', worst),
    #rest == N - K and worst <= 1e-5)
  -- and back: tensor 2 x zero 2 -> zero 3 over data 4
  local d = new_run(cfg3, g3, cfg3.SEED + 11)
  checkpoint.load(p2, state_of(d))
  local fd = full_params(d)
  same = true
  for n, t in pairs(full3) do same = same and bits_equal(t, fd[n]) end
  check('tensor 2 x zero 2 -> zero 3 (data 4): parameters bitwise', same)
  local p3b = checkpoint.save(DIR .. '/cross3b', state_of(d))
  local _, opt3b = plain_of(p3b, cfg3)
  check('tensor 2 x zero 2 -> zero 3 (data 4): AdamW moments bitwise',
    bits_equal(opt3.flat_m, opt3b.flat_m) and bits_equal(opt3.flat_v, opt3b.flat_v))
end

checks.finish()
