-- tests/mpi/domain_check.lua: domain parallelism (parallel.domain, lunar.parallel.domain)
-- trains what one rank trains, checked inside one mpirun job per world size
-- (tests/mpi/test_domain.sh runs it with -np 2 and 4).
--
--   mpirun -np W build/lunar tests/mpi/domain_check.lua [-- FILTER]
--
-- 1. The attention alone: ring and all-gather attention over the W ranks of
--    49 tokens (a 7 x 7 grid of patch rows split 2/2/2/1 over 4 ranks, 4/3
--    over 2: counts that do not divide by W) equal the single-rank fused
--    attention (lunar.ops.attention) on the whole sequence: forward o and lse
--    and backward dqkv rows of this rank, within 1e-5 (f32 sums in another
--    order).
-- 2. A tiny HybridViT (MODEL = 'hybrid_vit': width 16, depth 2, 2 heads, patch
--    4, 2 channels, 5 classes) on synthetic images, global batch 4, 5 AdamW
--    steps with clip_grad_norm 0.5 (it clips): every rank first trains the
--    single-rank reference itself (tiny, no collectives), then each layout of
--    domain D x data W/D, ring and all-gather attention, 2D and 3D, even and
--    uneven slabs (2D 12 px = 3 patch rows over 2 ranks: 2 + 1; 20 px = 5
--    rows over 4: 2 + 1 + 1 + 1; 3D 12^3 = 3 planes over 2, 20^3 = 5 planes
--    over 4), with each rank
--    reading only its slab of the images (Domain:slab of the loader's batch).
--    Checked against the reference: every step's loss within 1e-5 relative,
--    every step's global gradient norm within 1e-5 relative, and every final
--    parameter within 1e-5 absolute (AdamW's steps are lr = 1e-3: a lost or
--    doubled gradient moves a whole tensor by about lr per step), except
--    the key part of qkv.bias, whose true gradient is zero (softmax ignores a
--    constant added to every key): AdamW turns its rounding noise into steps
--    of about lr, so it gets lr * steps (as tests/mpi/parallel_check.lua).
--    ZeRO stage 1 (parallel.zero = 1) at domain 2 x data W/2, both attention
--    modes, stages 2 and 3 (ring), on 4 ranks also stage 2 over 2 micro-batches
--    (all-gather attention), stage 3 with hybrid sharding (group_size 1: the
--    shard averaged over replica x domain) and stage 3 with
--    gradient_accumulation 2 (against a single-rank reference that accumulates
--    alike; grad norms per optimizer step), and stage 3 under bf16 (the bf16
--    tolerances): the same tolerances. Each checks the shards: the AdamW states
--    of the shard group partition the parameters, each gradient / parameter
--    shard holds ceil(n / S) of each group (S the data-parallel group of the
--    domain coordinate, not domain x data), the full buffers freed, and the
--    domain ranks of an image hold the same shard index (the data ranks
--    different ones). The final parameters at stage 3 are gathered
--    (with_full_parameters); stage 3 x domain initializes shard by shard
--    (zero.materialize_deferred: the same weights as one rank's, or the
--    comparison fails).
--    Under precision = 'bf16' (where the CPU has avx512_bf16): domain 2 ring
--    against the single-rank bf16 run, losses within 3e-4, parameters within
--    lr / 5: the domain attention keeps its output o in f32 where the fused
--    single-rank kernel rounds it to bf16 (measured on 2 ranks: loss 1.6e-6,
--    parameters 1.0e-4 = lr / 10).
-- 3. setup's FLOPs per image under domain parallelism (a formula: no rank runs
--    a whole image) equal lunar.nn.flops' count of the unsharded model.
-- Every rank prints "rank R: domain_check N passed, M failed, K skipped".
local data = require('lunar.data')
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local domain = require('lunar.parallel.domain')
local nn = require('lunar.nn')
local models = require('lunar.models')
local ops = lunar.ops

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local FILTER = (lunar.args.rest or {})[1]
local STEPS, LR = 5, 1e-3

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path
local checks = require('rank_checks').new('domain_check', world)
local check = checks.check

local maxdiff = require('harness').max_abs_diff   -- (harness registers nothing by itself)

-- ---- 1. the attention alone -----------------------------------------------------------------
if not FILTER or ('attention'):find(FILTER, 1, true) then
  local B, H, Dh = 2, 2, 4
  local C = H * Dh
  local N = 49
  local qkv = lunar.empty({B, N, 3 * C}):normal_(11, 'domain_check.qkv', 0, 1)   -- the same on every rank
  local dout = lunar.empty({B, N, C}):normal_(11, 'domain_check.dout', 0, 1)
  local o, lse = ops.attention(qkv, H)
  local dqkv = ops.attention_backward(dout, qkv, o, lse, H)
  for _, mode in ipairs({'ring', 'allgather'}) do
    local d = domain.new{comm = world, size = W, rank = R, attention = mode, img_size = 7, patch_size = 1, img_dims = 2}
    local lo, n = d.token_offset + 1, d.tokens
    local mine = qkv:narrow(2, lo, n):contiguous()
    local mo, mlse, q = d:attention(mine, H)
    local e_o = maxdiff(mo, o:narrow(2, lo, n))
    local e_lse = maxdiff(mlse, lse:narrow(3, lo, n))
    local mdo = dout:narrow(2, lo, n):contiguous()
    local md = d:attention_backward(mdo, q, mo, mlse, H)
    local e_d = maxdiff(md, dqkv:narrow(2, lo, n))
    check(string.format('%s attention over %d ranks (%d of 49 tokens here): forward o %.2g, lse %.2g, ' ..
      'backward dqkv %.2g within 1e-5', mode, W, n, e_o, e_lse, e_d), e_o <= 1e-5 and e_lse <= 1e-5 and e_d <= 1e-5)
    if R == 0 then
      print(string.format('%s attention, %d ranks: max |diff| o %.2g lse %.2g dqkv %.2g', mode, W, e_o, e_lse, e_d))
    end
  end
end

-- ---- 2. training ------------------------------------------------------------------------------
local BASE = {
  MODEL = 'hybrid_vit', DATASET = 'synthetic', NUM_SAMPLES = 32, IMG_SIZE = 16, PATCH_SIZE = 4, IN_CHANS = 2,
  NUM_CLASSES = 5, HIDDEN_SIZE = 16, DEPTH = 2, NUM_HEADS = 2, MLP_RATIO = 4, BATCH_SIZE = 4, LEARNING_RATE = LR,
  WEIGHT_DECAY = 0.05, clip_grad_norm = 0.5, LABEL_SMOOTHING = 0.1, SEED = 7, PREFETCH = false, METRICS_FILE = '',
}

local function make_cfg(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'domain_check')
end

--- Trains STEPS updates on this rank's slab of its data-parallel shard;
-- returns losses, grad norms and the parameters (name -> tensor).
local function train(cfg, with_grid)
  local opts = {loaders = false, quiet = true, engine = {bucket_size = 700}}
  if not with_grid then opts.grid = false end      -- the single-rank reference: a plain model, no collectives
  local run = setup.from_config(cfg, nil, opts)
  local g, eng = run.grid, run.engine
  local ds = data.datasets(cfg)
  local loader = data.loader(ds, cfg, {train = true, rank = g and g.dp_rank or 0, num_shards = g and g.dp_size or 1})
  loader:set_epoch(0)
  local d = run.model.domain
  if d then
    -- the FLOPs of an image counted by formula under domain parallelism (setup) are lunar.nn.flops' count of
    -- the whole unsharded model on one rank (its GEMMs, the head once per image, attention), exactly
    local whole = nn.materialize(models.hybrid_vit(cfg), 0)
    local img = {cfg.IN_CHANS}
    for _ = 1, cfg.IMG_DIMS do img[#img + 1] = cfg.IMG_SIZE end
    local want = nn.flops.train_flops_per_image(whole, img)
    check(string.format('%dD %d px at domain %d: FLOPs per image %d, the unsharded count', cfg.IMG_DIMS,
      cfg.IMG_SIZE, d.size, want), run.flops_per_image == want, tostring(run.flops_per_image))
    whole._flat:free(); whole._flat_grad:free()
  end
  local losses, norms = {}, {}
  for _ = 1, STEPS do
    local x, y = loader:next()
    if d then
      local s = d:slab(x)
      x:free()
      x = s
    end
    local loss, _, updated = eng:train_step(x, y)
    losses[#losses + 1] = loss
    if updated then norms[#norms + 1] = eng.last_grad_norm end   -- gradient_accumulation: per optimizer step
    x:free(); y:free()
  end
  local z = run.zero
  if z then
    -- this rank's AdamW state (and from stage 2 its gradient shard, at stage 3 its fp32 master weights) is
    -- its block of each group over the shard group, S ranks of its domain coordinate's data-parallel group
    -- (the domain ranks do not add shards): the AdamW states of the shard group partition the parameters,
    -- and each shard buffer (blocks padded to ceil(n / S) per group) covers 1/S of them plus at most one
    -- padding element per group
    local S = (g.zero.group_size == 0 or g.zero.group_size > g.dp_size) and g.dp_size or g.zero.group_size
    local n, total = run.optimizer:state_dict().exp_avg:numel(), run.model:num_parameters()
    local sum = S > 1 and z.shard_group:all_reduce_number(n, 'sum') or n
    local bound = (total + S - 1) // S + #z.groups
    local sizes = {}
    if z.stage >= 2 then sizes[1] = z.shard_grad:numel() end
    if z.stage == 3 then sizes[2] = z.shard_param:numel() end
    local ok = sum == total and n <= bound
    for _, v in ipairs(sizes) do ok = ok and v <= bound and v * S >= total end
    check(string.format('zero %d at domain %d x data %d (shard group %d): AdamW state %d elements (%d over the ' ..
      'group, of %d)%s, <= %d', z.stage, g.domain_size, g.dp_size, S, n, sum, total, #sizes > 0 and
      string.format(', gradient%s shard %s', z.stage == 3 and ' and parameter' or '', table.concat(sizes, ', ')) or '',
      bound), ok)
    check(string.format('zero %d: full gradient buffer %s, full parameter buffer %s', z.stage,
      z.stage >= 2 and 'freed' or 'kept', z.stage >= 3 and 'freed' or 'kept'),
      (run.model._flat_grad == nil) == (z.stage >= 2) and (run.model._flat == nil) == (z.stage >= 3))
    -- the domain ranks of an image hold the same shard index; the data-parallel ranks different ones
    local dc, dpc = g.domain_group, g.dp_group
    local same = dc:all_reduce_number(z.rank, 'max') == z.rank and dc:all_reduce_number(z.rank, 'min') == z.rank
    local distinct = dpc:all_reduce_number(1 << (z.rank + (g.dp_rank // S) * S), 'sum') == (1 << g.dp_size) - 1
    check(string.format('zero %d: shard index %d the same on the %d domain ranks, one per rank of the shard ' ..
      'group', z.stage, z.rank, g.domain_size), same and distinct)
  end
  local function collect()
    local params = {}
    for _, p in ipairs(run.model:parameters()) do params[p.name] = p.param:clone() end
    return params
  end
  local params = z and z:with_full_parameters(collect) or collect()
  return {losses = losses, norms = norms, params = params, names = run.model:parameters()}
end

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-30) end

local TOL = {fp32 = {loss = 1e-5, norm = 1e-5, param = 1e-5}, bf16 = {loss = 3e-4, norm = 5e-4, param = LR / 5}}

local function compare(name, got, ref, tol)
  local wl, wn = 0, 0
  for i = 1, STEPS do wl = math.max(wl, rel(got.losses[i], ref.losses[i])) end
  for i = 1, #ref.norms do wn = math.max(wn, rel(got.norms[i] or math.huge, ref.norms[i])) end
  if #got.norms ~= #ref.norms then wn = math.huge end
  check(name .. ': losses within ' .. tol.loss, wl <= tol.loss, string.format('worst %.3g: %s vs %s', wl,
    table.concat(got.losses, ' '), table.concat(ref.losses, ' ')))
  check(name .. ': grad norms within ' .. tol.norm, wn <= tol.norm, string.format('worst %.3g', wn))
  local C, wp, wname = BASE.HIDDEN_SIZE, 0, ''
  for _, p in ipairs(ref.names) do
    local a, b = got.params[p.name], ref.params[p.name]
    local va, vb = a:view(-1):totable(), b:view(-1):totable()
    local key_bias = p.name:match('attn%.qkv%.bias$') ~= nil
    for i = 1, #vb do
      if not (key_bias and i > C and i <= 2 * C) then
        local dd = math.abs(va[i] - vb[i])
        if dd > wp then wp, wname = dd, p.name end
      elseif math.abs(va[i] - vb[i]) > LR * STEPS then
        wp, wname = math.huge, p.name
      end
    end
  end
  check(name .. ': final parameters within ' .. tol.param, wp <= tol.param, string.format('worst %.3g in %s', wp,
    wname))
  if R == 0 then
    print(string.format('%-44s loss %.2g  grad norm %.2g  param %.2g (%s)', name, wl, wn, wp, wname))
  end
end

local LAYOUTS = {}
local function add(label, over, precision)
  LAYOUTS[#LAYOUTS + 1] = {label = label, over = over, precision = precision}
end
local dims_sizes = {{2, 16, 'even'}, {2, W == 2 and 12 or 20, 'uneven'}, {3, 16, 'even'}, {3, W == 2 and 12 or 20, 'uneven'}}
for _, ds in ipairs(dims_sizes) do
  local dims, img, kind = ds[1], ds[2], ds[3]
  for _, D in ipairs(W > 2 and {W, 2} or {W}) do
    for _, mode in ipairs({'ring', 'allgather'}) do
      local rows = img // 4
      if W % D == 0 and D <= rows and not (D < W and (dims == 3 or kind == 'uneven')) then
        add(string.format('%dD %d px (%s), domain %d x data %d, %s', dims, img, kind, D, W // D, mode),
          {IMG_DIMS = dims, IMG_SIZE = img, BATCH_SIZE = BASE.BATCH_SIZE // (W // D),
           parallel = {domain = {size = D, attention = mode}}})
      end
    end
  end
end
-- sharded data parallelism (parallel.zero = 1) composes with domain parallelism: each domain coordinate
-- shards AdamW's state over its data-parallel group (on 2 ranks a group of one), gradients averaged over
-- domain x data first; with clipping, as every layout
for _, mode in ipairs({'ring', 'allgather'}) do
  add(string.format('2D 16 px, domain 2 x data %d, %s, zero 1', W // 2, mode),
    {IMG_DIMS = 2, IMG_SIZE = 16, BATCH_SIZE = BASE.BATCH_SIZE // (W // 2),
     parallel = {domain = {size = 2, attention = mode}, zero = 1}})
end
-- ZeRO stages 2 and 3: gradients reduce-scattered ('avg') over the data-parallel group of each domain
-- coordinate in backward, the shard then averaged over the domain group (one all_reduce per step); stage 3
-- gathers each unit's parameters over that group. On 4 ranks also 2 micro-batches (a reduce_scatter per
-- micro-batch) and hybrid sharding (group_size 1: the shard averaged over the replica x domain group at once)
for _, stage in ipairs({2, 3}) do
  add(string.format('2D 16 px, domain 2 x data %d, ring, zero %d', W // 2, stage),
    {IMG_DIMS = 2, IMG_SIZE = 16, BATCH_SIZE = BASE.BATCH_SIZE // (W // 2), parallel = {domain = 2, zero = stage}})
end
if W == 4 then
  add('2D 16 px, domain 2 x data 2, allgather, zero 2, 2 micro-batches', {IMG_DIMS = 2, IMG_SIZE = 16,
    BATCH_SIZE = 2, NUM_MICRO_BATCHES = 2, parallel = {domain = {size = 2, attention = 'allgather'}, zero = 2}})
  add('2D 16 px, domain 2 x data 2, ring, zero 3 hybrid group_size 1', {IMG_DIMS = 2, IMG_SIZE = 16,
    BATCH_SIZE = 2, parallel = {domain = 2, zero = {stage = 3, group_size = 1}}})
  -- gradient accumulation (2 batches per optimizer step): a reduce_scatter per backward into the shard,
  -- the domain average once, before the step
  add('2D 16 px, domain 2 x data 2, ring, zero 3, gradient_accumulation 2', {IMG_DIMS = 2, IMG_SIZE = 16,
    BATCH_SIZE = 2, gradient_accumulation = 2, parallel = {domain = 2, zero = 3}})
end
if ops.bf16_supported() then
  add(string.format('2D 16 px, domain 2 x data %d, ring, zero 3, bf16', W // 2), {IMG_DIMS = 2, IMG_SIZE = 16,
    BATCH_SIZE = BASE.BATCH_SIZE // (W // 2), parallel = {domain = 2, zero = 3}, precision = 'bf16'}, 'bf16')
  add('2D 16 px, domain 2, ring, bf16', {IMG_DIMS = 2, IMG_SIZE = 16, BATCH_SIZE = BASE.BATCH_SIZE // (W // 2),
    parallel = {domain = 2}, precision = 'bf16'}, 'bf16')
else
  checks.skip('bf16 domain 2', 'this CPU has no avx512_bf16')
end

local refs = {}
for _, l in ipairs(LAYOUTS) do
  if not FILTER or l.label:find(FILTER, 1, true) then
    -- the single-rank reference of the layout's image, precision and gradient accumulation
    local ga = l.over.gradient_accumulation
    local key = string.format('%d %d %s %d', l.over.IMG_DIMS, l.over.IMG_SIZE, l.precision or 'fp32', ga or 1)
    if not refs[key] then
      refs[key] = train(make_cfg({IMG_DIMS = l.over.IMG_DIMS, IMG_SIZE = l.over.IMG_SIZE, precision = l.precision,
        gradient_accumulation = ga}), false)
    end
    compare(l.label, train(make_cfg(l.over), true), refs[key], TOL[l.precision or 'fp32'])
  end
end

checks.finish()
