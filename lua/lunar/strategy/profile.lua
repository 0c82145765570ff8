--- lunar.strategy.profile: measures this machine for the strategy search
-- (`lunar profile --config C [--out PROFILE]`; Galvatron's profiler, Miao et
-- al. 2022, "Galvatron", sec. 4 and its cost_model.py: per-layer compute
-- time, activation memory per sample per tensor size, collective
-- coefficients per group size and placement, the overlap slowdown).
--
--   local prof = require('lunar.strategy.profile').run(cfg, {comm = lunar.comm.world()})
--   require('lunar.strategy.profile').write(prof, 'profile.json')
--
-- Run on every rank of the job (mpirun -np N measures the collectives over
-- groups of 2, 4, .. N ranks and tensor-parallel blocks up to N); one rank
-- measures compute only. What it measures (times in seconds, bytes):
--   block.tp[T]      for each tensor size T (a power of two dividing NUM_HEADS,
--                    the MLP width and the world): the forward and backward time
--                    of one transformer block of the config's width on this rank
--                    of a T-rank tensor group (its collectives included) at each
--                    local batch of opts.batches (default {1, 2, 4}), fitted as
--                    a + c * batch (least squares: fwd = {a, c}, bwd = {a, c});
--                    activation bytes per sample: kept (what the forward keeps,
--                    its input included), input (what a checkpointed block keeps),
--                    extra (the backward's peak above kept), measured with the
--                    allocator's counters at the largest batch
--   block.params     parameters of one block (all tensor ranks together)
--   other            the embedding, final norm, head and loss: forward + backward
--                    time {a, c} per local batch (a ViT of depth 1 minus one block)
--   optimizer        AdamW step seconds per parameter
--   comm.<op>[P][g]  op all_reduce, all_gather, reduce_scatter; P 'consecutive'
--                    (ranks r..r+g-1, the tensor group's placement) or 'strided'
--                    (ranks r, r+N/g, ..: Galvatron's tp_consec = 0); g the group
--                    size: {alpha (s), beta (s per byte)} fitted from two message
--                    sizes (the slowest rank's time); p2p {alpha, beta} (ping-pong
--                    between ranks 0 and 1, one way)
--   overlap          backward-compute slowdown while a data-parallel all_reduce
--                    runs (>= 1; 1 on one rank): a block's backward at the largest
--                    batch with and without an all_reduce over every rank in flight,
--                    its message sized to take about as long as that backward
--   model, machine   what was measured (the search warns when they differ)
-- @module lunar.strategy.profile
local nn = require('lunar.nn')
local models = require('lunar.models')
local tensor_1d = require('lunar.parallel.tensor_1d')

local profile = {}

profile.VERSION = 1

local median = require('lunar.profile').median

--- The line y = a + c x through points (x_i, y_i) of least relative error
-- (least squares weighted by 1 / y_i^2, so the small batches' fixed costs
-- count as much as the large batches' per-sample costs; a single point:
-- {0, y / x}). a and c are clamped at >= 0.
function profile.fit(xs, ys)
  local n = #xs
  if n == 1 then return {0.0, ys[1] / xs[1]} end
  local sw, sx, sy, sxx, sxy = 0, 0, 0, 0, 0
  for i = 1, n do
    local w = ys[i] > 0 and 1 / ys[i] ^ 2 or 1
    sw, sx, sy = sw + w, sx + w * xs[i], sy + w * ys[i]
    sxx, sxy = sxx + w * xs[i] ^ 2, sxy + w * xs[i] * ys[i]
  end
  local c = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
  local a = (sy - c * sx) / sw
  if a < 0 then a, c = 0.0, sxy / sxx end
  if c < 0 then a, c = sy / sw, 0.0 end
  return {a + 0.0, c + 0.0}
end

-- The model keys a profile describes (the search compares them with its config).
function profile.model_of(cfg)
  return {HIDDEN_SIZE = cfg.HIDDEN_SIZE, NUM_HEADS = cfg.NUM_HEADS, MLP_RATIO = cfg.MLP_RATIO + 0.0,
    SEQ_LENGTH = cfg.SEQ_LENGTH, DEPTH = cfg.DEPTH, NUM_CLASSES = cfg.NUM_CLASSES, IMG_SIZE = cfg.IMG_SIZE,
    PATCH_SIZE = cfg.PATCH_SIZE, IN_CHANS = cfg.IN_CHANS, IMG_DIMS = cfg.IMG_DIMS, precision = cfg.precision}
end

-- The machine a profile was measured on.
local function machine_of(world)
  local f = io.open('/proc/sys/kernel/hostname')
  local host = f and f:read('l') or '?'
  if f then f:close() end
  return {host = host, threads = lunar.num_threads(), world = world:size(), device = lunar.default_device(),
    lunar = lunar.version}
end

-- Seconds of fn() (the slowest rank's mean over `reps` runs back to back after one warm-up).
-- Back to back, between two barriers only: with more ranks than cores, a run short against
-- the scheduler's time slice would otherwise be timed alone while the other ranks wait.
local function timed(comm, reps, fn)
  fn()
  comm:barrier()
  local t0 = lunar.clock()
  for _ = 1, reps do fn() end
  return comm:all_reduce_number((lunar.clock() - t0) / reps, 'max')
end

-- One block of the config on a tensor group `group` of size T (nil: no split).
local function make_block(cfg, group, T, precision)
  local plain = models.vit(cfg)
  local tp = T > 1 and tensor_1d.new{comm = group, size = T, rank = group:rank()} or nil
  local root = nn.Module()
  root:add('block', nn.Block{dim = cfg.HIDDEN_SIZE, num_heads = cfg.NUM_HEADS, mlp_ratio = cfg.MLP_RATIO,
    eps = 1e-6, drop = 0, seed = 0, qkv_bias = plain.opts.qkv_bias, tp = tp})
  nn.materialize(root, 1, {precision = precision})
  return root.block, root
end

-- Forward and backward seconds, and activation bytes, of `block` at local batch b.
local function time_block(world, block, cfg, b, reps)
  local x = lunar.empty({b, cfg.SEQ_LENGTH, cfg.HIDDEN_SIZE}):normal_(1, 'profile.x', 0, 1)
  local dy = lunar.empty({b, cfg.SEQ_LENGTH, cfg.HIDDEN_SIZE}):normal_(2, 'profile.dy', 0, 1)
  -- the memory, from one forward and backward
  collectgarbage()
  local base = lunar.memory().bytes_in_use
  local y, ctx = block:forward(x)
  y:free()
  local mem = {kept = lunar.memory().bytes_in_use - base + x:numel() * 4}
  lunar.reset_peak_memory()
  local m0 = lunar.memory().bytes_in_use
  block:backward(ctx, dy, true):free()
  mem.extra = lunar.memory().peak_bytes - m0 + dy:numel() * 4
  -- the times: reps forward/backward pairs back to back (see timed), each part summed
  world:barrier()
  local fwd, bwd = 0, 0
  for _ = 1, reps do
    local t0 = lunar.clock()
    local y2, ctx2 = block:forward(x)
    local t1 = lunar.clock()
    y2:free()
    block:backward(ctx2, dy, true):free()
    fwd, bwd = fwd + (t1 - t0), bwd + (lunar.clock() - t1)
  end
  x:free(); dy:free()
  return world:all_reduce_number(fwd / reps, 'max'), world:all_reduce_number(bwd / reps, 'max'), mem
end

-- The tensor sizes to profile: powers of two dividing the heads, the MLP width and the world.
local function tensor_sizes(cfg, W)
  local hidden = math.floor(cfg.HIDDEN_SIZE * cfg.MLP_RATIO + 0.5)
  local out, t = {}, 1
  while t <= W do
    if W % t == 0 and cfg.NUM_HEADS % t == 0 and hidden % t == 0 and cfg.HIDDEN_SIZE % t == 0 then
      out[#out + 1] = t
    end
    t = t * 2
  end
  return out
end

-- alpha, beta of one collective over groups of g ranks placed `placement`.
local function time_collective(world, op, g, placement, sizes, reps)
  local W, R = world:size(), world:rank()
  local color = placement == 'consecutive' and R // g or R % (W // g)
  local comm = world:split(color, R, string.format('profile/%s%d', placement, g))
  local xs, ys = {}, {}
  for i, n in ipairs(sizes) do
    local full = lunar.zeros({n})
    local part = lunar.zeros({n // g})
    local fn
    if op == 'all_reduce' then fn = function() comm:all_reduce(full) end
    elseif op == 'all_gather' then fn = function() comm:all_gather(full, part) end
    else fn = function() comm:reduce_scatter(part, full) end end
    xs[i], ys[i] = n * 4, timed(world, reps, fn)
    full:free(); part:free()
  end
  local f = profile.fit(xs, ys)
  return {alpha = f[1], beta = f[2]}
end

local function time_p2p(world, sizes, reps)
  local R = world:rank()
  local xs, ys = {}, {}
  for i, n in ipairs(sizes) do
    local t = lunar.zeros({n})
    xs[i] = n * 4
    ys[i] = timed(world, reps, function()
      if R == 0 then world:send(t, 1, 7); world:recv(t, 1, 8)
      elseif R == 1 then world:recv(t, 0, 7); world:send(t, 0, 8) end
    end) / 2
    t:free()
  end
  local f = profile.fit(xs, ys)
  return {alpha = f[1], beta = f[2]}
end

--- Measures this machine for a config; see the module doc. Collective on
-- opts.comm (default the world): every rank calls it.
-- @param cfg a resolved config of the built-in ViT
-- @param opts {comm=, batches = local batches (default {1, 2, 4}), reps = timed runs per
--   point (default 3), message_sizes = floats per collective (default {2^12, 2^18}),
--   quiet = no progress lines on rank 0}
-- @return the profile table
function profile.run(cfg, opts)
  opts = opts or {}
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then
    lunar.error("lunar profile: config key 'MODEL' (models as code) is not profiled yet; the search models the " ..
      'built-in ViT (MODEL = nil)')
  end
  local world = opts.comm or lunar.comm.world()
  local W, R = world:size(), world:rank()
  local batches = opts.batches or {1, 2, 4}
  local reps = opts.reps or 3
  local sizes = opts.message_sizes or {1 << 12, 1 << 18}
  local function say(fmt, ...)
    if R == 0 and not opts.quiet then io.stdout:write(string.format(fmt, ...), '\n'); io.stdout:flush() end
  end
  local prof = {kind = 'lunar-profile', version = profile.VERSION, model = profile.model_of(cfg),
    machine = machine_of(world), batches = batches, block = {tp = {}}, comm = {}}

  -- blocks, per tensor size
  for _, T in ipairs(tensor_sizes(cfg, W)) do
    local group = world:split(R // T, R, 'profile/tp' .. T)
    local block, root = make_block(cfg, group, T, cfg.precision)
    if T == 1 then prof.block.params = root:num_parameters() end
    local fs, bs, mem = {}, {}, nil
    for i, b in ipairs(batches) do fs[i], bs[i], mem = time_block(world, block, cfg, b, reps) end
    local bmax = batches[#batches]
    local input = bmax * cfg.SEQ_LENGTH * cfg.HIDDEN_SIZE * 4
    prof.block.tp[tostring(T)] = {fwd = profile.fit(batches, fs), bwd = profile.fit(batches, bs),
      act = {kept = mem.kept / bmax, input = input / bmax, extra = mem.extra / bmax}}
    say('block, tensor %d: forward %.3g + %.3g b s, backward %.3g + %.3g b s, %.0f bytes kept per sample', T,
      prof.block.tp[tostring(T)].fwd[1], prof.block.tp[tostring(T)].fwd[2], prof.block.tp[tostring(T)].bwd[1],
      prof.block.tp[tostring(T)].bwd[2], mem.kept / bmax)
    root._flat:free(); root._flat_grad:free()
  end

  -- the embedding and head: a ViT of depth 1 minus its block
  do
    local o = {}
    for k, v in pairs(models.vit(cfg).opts) do o[k] = v end
    o.depth, o.activation_checkpointing = 1, nil
    local vit = nn.materialize(nn.ViT(o), 1, {precision = cfg.precision})
    local crit = nn.CrossEntropy{}
    local ts = {}
    for i, b in ipairs(batches) do
      local img = {b, cfg.IN_CHANS}
      for _ = 1, cfg.IMG_DIMS do img[#img + 1] = cfg.IMG_SIZE end
      local x = lunar.empty(img):normal_(3, 'profile.img', 0, 1)
      local y = lunar.zeros({b}, 'i32')
      ts[i] = timed(world, reps, function()
        local logits, ctx = vit:forward(x)
        local _, cc = crit:forward(logits, y)
        local d = crit:backward(cc, 1)
        logits:free()
        vit:backward(ctx, d, false)
        d:free()
      end)
      x:free(); y:free()
      local blk = prof.block.tp['1']
      ts[i] = math.max(0.0, ts[i] - (blk.fwd[1] + blk.fwd[2] * b + blk.bwd[1] + blk.bwd[2] * b))
    end
    prof.other = {time = profile.fit(batches, ts)}
    vit._flat:free(); vit._flat_grad:free()
  end

  -- the optimizer: AdamW per parameter
  do
    local n = 1 << 18
    local root = nn.Module()
    root:param('w', {n}, {kind = 'zeros'})
    nn.materialize(root, 1)
    local opt = require('lunar.optim').AdamW(root:parameters(), {lr = 1e-3})
    prof.optimizer = {per_param = timed(world, reps, function() opt:step() end) / n}
    root._flat:free(); root._flat_grad:free()
  end

  -- collectives per group size and placement, point to point
  for _, op in ipairs({'all_reduce', 'all_gather', 'reduce_scatter'}) do
    prof.comm[op] = {consecutive = {}, strided = {}}
    local g = 2
    while g <= W do
      if W % g == 0 then
        for _, placement in ipairs({'consecutive', 'strided'}) do
          prof.comm[op][placement][tostring(g)] = time_collective(world, op, g, placement, sizes, reps)
        end
        local c = prof.comm[op].consecutive[tostring(g)]
        say('%s over %d ranks: %.3g s + %.3g s/MiB', op, g, c.alpha, c.beta * 2 ^ 20)
      end
      g = g * 2
    end
  end
  prof.comm.p2p = W > 1 and time_p2p(world, sizes, reps) or {alpha = 0.0, beta = 0.0}

  -- the overlap slowdown: a block's backward while a data-parallel all_reduce is in flight
  prof.overlap = 1.0
  if W > 1 then
    local block, root = make_block(cfg, nil, 1, cfg.precision)
    local b = batches[#batches]
    local x = lunar.empty({b, cfg.SEQ_LENGTH, cfg.HIDDEN_SIZE}):normal_(1, 'profile.x', 0, 1)
    local dy = lunar.empty({b, cfg.SEQ_LENGTH, cfg.HIDDEN_SIZE}):normal_(2, 'profile.dy', 0, 1)
    -- a message whose all_reduce alone takes about one backward (Galvatron's overlap: the
    -- compute that runs while the data-parallel gradients are reduced)
    local t_bw = prof.block.tp['1'].bwd[1] + prof.block.tp['1'].bwd[2] * b
    local ar = prof.comm.all_reduce.consecutive[tostring(W)]
    local n = ar and ar.beta > 0 and math.floor((t_bw - ar.alpha) / ar.beta / 4) or sizes[#sizes]
    n = math.max(1024, math.min(n, 1 << 22))
    local buf = lunar.zeros({n})
    local function bwd(with_comm)
      local y, ctx = block:forward(x)
      y:free()
      world:barrier()
      local req = with_comm and world:iall_reduce(buf) or nil
      local t0 = lunar.clock()
      local dx = block:backward(ctx, dy, true)
      if req then req:test() end
      local t = lunar.clock() - t0
      if req then req:wait() end
      dx:free()
      return t
    end
    local plain, over = {}, {}
    bwd(false)
    for i = 1, reps + 2 do plain[i], over[i] = bwd(false), bwd(true) end
    prof.overlap = math.max(1.0, world:all_reduce_number(median(over) / median(plain), 'max'))
    x:free(); dy:free(); buf:free(); root._flat:free(); root._flat_grad:free()
  end
  say('overlap slowdown %.2f', prof.overlap)
  return prof
end

--- Writes a profile as JSON (lunar.json; atomically) or, for a name ending in
-- .lua, as a Lua chunk returning the table. Rank 0 writes; other ranks do nothing.
function profile.write(prof, path)
  if (lunar.rank or 0) ~= 0 then return end
  local text
  if path:match('%.lua$') then
    text = 'return lunar.json.decode(' .. string.format('%q', lunar.json.encode(prof)) .. ')\n'
  else
    text = lunar.json.encode(prof) .. '\n'
  end
  lunar.io.write_file(path, text)
end

--- Reads a profile written by profile.write; raises a user error naming the
-- file when it is missing, unreadable or not a Lunar profile of this version.
function profile.read(path)
  local f, err = io.open(path, 'rb')
  if not f then lunar.error(string.format('profile %s: %s', path, tostring(err))) end
  local text = f:read('a')
  f:close()
  local ok, prof
  if path:match('%.lua$') then
    local chunk = load(text, '@' .. path, 't', {lunar = lunar})
    ok, prof = pcall(chunk or error)
  else
    ok, prof = pcall(lunar.json.decode, text)
  end
  if not ok or type(prof) ~= 'table' or prof.kind ~= 'lunar-profile' then
    lunar.error(string.format('profile %s: not a Lunar profile (written by `lunar profile`)%s', path,
      ok and '' or (': ' .. tostring(prof))))
  end
  if prof.version ~= profile.VERSION then
    lunar.error(string.format('profile %s: version %s, this Lunar reads version %d (profile again)', path,
      tostring(prof.version), profile.VERSION))
  end
  return prof
end

--- What differs between a profile and a config or this machine: a list of
-- texts (empty: nothing).
function profile.differences(prof, cfg)
  local out = {}
  local want = profile.model_of(cfg)
  for _, k in ipairs({'HIDDEN_SIZE', 'NUM_HEADS', 'MLP_RATIO', 'SEQ_LENGTH', 'NUM_CLASSES', 'IMG_SIZE',
      'PATCH_SIZE', 'IN_CHANS', 'precision'}) do
    if prof.model[k] ~= want[k] then
      out[#out + 1] = string.format('%s: profile %s, config %s', k, tostring(prof.model[k]), tostring(want[k]))
    end
  end
  local f = io.open('/proc/sys/kernel/hostname')
  local host = f and f:read('l')
  if f then f:close() end
  if host and prof.machine.host ~= host then
    out[#out + 1] = string.format('machine: profiled on %s, this is %s', tostring(prof.machine.host), host)
  end
  return out
end

return profile
