-- tests/mpi/tensor_nd_layers_check.lua: each layer the multi-dimensional
-- tensor-parallel modes split (lunar.parallel.tensor_2d: '2d', '2.5d';
-- lunar.parallel.tensor_3d: '3d')
-- alone against its unpartitioned self (lunar.nn), forward and backward.
--
--   mpirun -np W build/lunar tests/mpi/tensor_nd_layers_check.lua MODE [DEPTH]
--
-- The split layer and the plain one are built with the same arguments and
-- materialized with the same seed (a split parameter is initialized as its
-- piece of the full tensor); every rank draws the same full input and the
-- same full output gradient, feeds its block, and the blocks of the output
-- and of the input gradient are all-gathered over the tensor group and put
-- in place (tp:activation_block), the parameter gradients gathered as
-- parallel.gather_full_tensor gathers parameters. Checked within 1e-5 of the
-- largest reference value: the outputs, the input gradients, every
-- parameter gradient (by name). Shapes: 5 tokens (the tokens are never
-- split: any count works), batch 4 (a multiple of the batch blocks), 16
-- features, 4 heads, MLP 32, 5 classes (the head's output is whole). Then
-- engine:eval_step on a batch that is not a multiple of the batch blocks
-- (padded, the logits cut back) gives one rank's logits. And the
-- errors: features or heads the grid cannot split raise one message naming
-- the numbers, at construction (before any collective).
local nn = require('lunar.nn')
local parallel = require('lunar.parallel')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local args = lunar.args.rest or {}
local MODE, DEPTH = args[1] or '2d', tonumber(args[2] or '')

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path
local checks = require('rank_checks').new('tensor_nd_layers_check ' .. MODE, world)
local check = checks.check

local B, N, C, H, HID, CLS = 4, 5, 16, 4, 32, 5
local cfg = {parallel = {tensor = {mode = MODE, size = W, depth = DEPTH}}, HIDDEN_SIZE = C, NUM_HEADS = H,
  MLP_RATIO = HID / C, BATCH_SIZE = B}
local g = parallel.initialize(cfg, world, {quiet = true})
local tp = parallel.tp_context(g)
local ops = lunar.ops

local function rand(shape, name)
  local t = lunar.empty(shape)
  t:uniform_(11, name, -1, 1)
  return t
end

-- this rank's block of a full activation [B, ..., F] (features in G groups)
local function block_of(full, inner, groups)
  local bb, nb, fb, nf = tp:activation_block(inner)
  local s = full:shape()
  local b, F = s[1] // nb, s[#s]
  local x = full:narrow(1, bb * b + 1, b)
  local G = groups or 1
  local part = F // (G * nf)
  local outs = {}
  local shape = {table.unpack(s)}
  shape[1], shape[#s] = b, G * part
  local out = lunar.empty(shape)
  for gi = 0, G - 1 do
    out:narrow(#s, gi * part + 1, part):copy_(x:narrow(#s, gi * (F // G) + fb * part + 1, part))
  end
  return out
end

-- the full activation from every rank's block (all_gather over the tensor group)
local function gather_blocks(loc, full_shape, inner, groups)
  local buf = lunar.empty({g.tp_size, loc:numel()})
  g.tp_group:all_gather(buf, loc:contiguous())
  local full = lunar.zeros(full_shape)
  local s = loc:shape()
  local G = groups or 1
  local F = full_shape[#full_shape]
  for r = 0, g.tp_size - 1 do
    local bb, _, fb, nf = tp:activation_block(inner, r)
    local part = F // (G * nf)
    local x = buf[r + 1]:view(table.unpack(s))
    for gi = 0, G - 1 do
      full:narrow(1, bb * s[1] + 1, s[1]):narrow(#s, gi * (F // G) + fb * part + 1, part)
        :copy_(x:narrow(#s, gi * part + 1, part))
    end
  end
  buf:free()
  return full
end

local function max_abs(t) local m = 0 for _, v in ipairs(t:view(-1):totable()) do m = math.max(m, math.abs(v)) end return m end
local function close(name, got, want)
  local a, b = got:contiguous():view(-1):totable(), want:contiguous():view(-1):totable()
  local scale, worst = math.max(max_abs(want), 1e-6), 0
  local ok = #a == #b
  for i = 1, math.min(#a, #b) do worst = math.max(worst, math.abs(a[i] - b[i])) end
  ok = ok and worst <= 1e-5 * scale
  check(name, ok, string.format('%d vs %d values, worst |diff| %.3g (scale %.3g)', #a, #b, worst, scale))
  return worst / scale
end

-- the gradient of every parameter of `split`, gathered to full, against `plain`'s by name
local function compare_grads(label, split, plain)
  local want = {}
  for _, p in ipairs(plain:parameters()) do want[p.name] = p.grad end
  local n = 0
  for _, p in ipairs(split:parameters()) do
    local full = parallel.gather_full_tensor({param = p.grad, shard = p.shard, shape = p.shape}, g)
    close(label .. ': grad ' .. p.name, full, want[p.name])
    n = n + 1
  end
  check(label .. ': every parameter compared', n == #plain:parameters() and n > 0)
end

--- One layer: build(factory) gives the module; x_full the input; in/out
-- layouts (inner: column_linear's output layout; 'whole': not split; 'cls':
-- class tokens [B, C]); out_groups for qkv.
local function layer(label, build, x_full, in_inner, out_inner, out_groups, opts)
  opts = opts or {}
  local plain = nn.materialize(build(nil), 5)
  local split = nn.materialize(build(tp), 5)
  local x = opts.whole_input and x_full or block_of(x_full, in_inner)
  local y_full, cp = plain:forward(x_full)
  local y, cs = split:forward(x)
  local got
  if opts.whole_output then got = y else got = gather_blocks(y, y_full:shape(), out_inner, out_groups) end
  close(label .. ': forward', got, y_full)
  local dy_full = rand(y_full:shape(), label .. '.dy')
  local dy = opts.whole_output and dy_full or block_of(dy_full, out_inner, out_groups)
  local dx_full = plain:backward(cp, dy_full)
  local dx = split:backward(cs, dy)
  local dgot = opts.whole_input and dx or gather_blocks(dx, x_full:shape(), in_inner)
  close(label .. ': input gradient', dgot, dx_full)
  compare_grads(label, split, plain)
end

local x = rand({B, N, C}, 'x')
layer('column_linear 16 -> 48 (3 groups, qkv)', function(f)
  return (f or require('lunar.nn.layers')):column_linear(C, 3 * C, {groups = 3})
end, x, false, true, 3)
local xi = rand({B, N, HID}, 'xi')
layer('row_linear 32 -> 16 (fc2)', function(f)
  return (f or require('lunar.nn.layers')):row_linear(HID, C)
end, xi, true, false)
layer('layer_norm 16', function(f) return (f or require('lunar.nn.layers')):layer_norm(C, 1e-6) end, x, false, false)
layer('Attention 16, 4 heads', function(f) return nn.Attention(C, H, {tp = f}) end, x, false, false)
layer('MLP 16 -> 32 -> 16', function(f) return nn.MLP(C, HID, {tp = f}) end, x, false, false)
layer('Block', function(f) return nn.Block{dim = C, num_heads = H, mlp_ratio = HID / C, tp = f} end, x, false, false)
local img = rand({B, 2, 8, 8}, 'img')
layer('patch_embed 8x8 patch 4, 2 -> 16', function(f)
  return (f or require('lunar.nn.layers')):patch_embed{img_size = 8, patch_size = 4, in_chans = 2, embed_dim = C}
end, img, false, false, nil, {whole_input = true})
local cls = rand({B, C}, 'cls')
layer('head 16 -> 5', function(f) return (f or require('lunar.nn.layers')):head(C, CLS) end, cls, false, false, nil,
  {whole_output = true})

-- evaluation of a batch that is not a multiple of the batch blocks (the test set's last batch):
-- engine:eval_step pads it with zero images and cuts the logits: those of one rank
do
  local config, setup = require('lunar.config'), require('lunar.setup')
  local function run_of(par)
    local c = config.from_table({DATASET = 'synthetic', NUM_SAMPLES = 8, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2,
      NUM_CLASSES = CLS, HIDDEN_SIZE = C, DEPTH = 2, NUM_HEADS = H, MLP_RATIO = HID / C, BATCH_SIZE = B,
      SEED = 3, PREFETCH = false, METRICS_FILE = '', parallel = par}, 'tensor_nd_layers_check')
    return setup.from_config(c, nil, {grid = par and parallel.initialize(c, world, {quiet = true}) or false,
      loaders = false})
  end
  local one, split = run_of(nil), run_of(cfg.parallel)
  local n = tp:num_batch_blocks() + 1
  local imgs = rand({n, 2, 8, 8}, 'eval')
  one.model:evaluate(); split.model:evaluate()
  local want = one.engine:eval_step(imgs)
  local got = split.engine:eval_step(imgs)
  close(string.format('eval_step of %d images (not a multiple of %d batch blocks): the logits of one rank', n,
    tp:num_batch_blocks()), got, want)
end

-- widths and heads the grid cannot split: one message at construction
local q = tp.q
local function raises(label, fn, needles)
  local ok, msg = pcall(fn)
  local good = not ok and type(msg) == 'string'
  for _, s in ipairs(needles) do good = good and msg:find(s, 1, true) ~= nil end
  check(label, good, tostring(msg))
end
local unit, label = q * tp.npieces, tp:vector_layout().label   -- q x q (2D) or q x q x q (3D): a vector's pieces
local W2 = (unit // q) * (q + 1)                                   -- divisible by unit / q, not by unit
raises('a linear whose bias has features not divisible by ' .. label, function() return tp:column_linear(C, W2) end,
  {'bias has ' .. W2 .. ' features along dim 1', label .. ' = ' .. unit})
raises('a linear whose input features are not divisible by q', function() return tp:row_linear(q + 1, C) end,
  {(q + 1) .. ' -> ' .. C, 'not divisible by q = ' .. q})
raises('a LayerNorm whose width is not divisible by ' .. label, function() return tp:layer_norm(W2, 1e-6) end,
  {'weight has ' .. W2 .. ' features', label .. ' = ' .. unit})
raises('heads not divisible by q', function() return nn.Attention(q * (q + 1) * q * q, q + 1, {tp = tp}) end,
  {'NUM_HEADS ' .. (q + 1) .. ' is not divisible by q = ' .. q})

checks.finish()
