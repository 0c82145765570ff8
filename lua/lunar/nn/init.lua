--- lunar.nn: modules with explicit forward/backward (DESIGN.md) and
-- materialize, which gives a model's parameters their storage and values.
local nn = {
  Module = require('lunar.nn.Module'),
  Context = require('lunar.nn.Context'),
  layers = require('lunar.nn.layers'),
  Linear = require('lunar.nn.Linear'),
  LayerNorm = require('lunar.nn.LayerNorm'),
  PatchEmbed = require('lunar.nn.PatchEmbed'),
  Dropout = require('lunar.nn.Dropout'),
  Attention = require('lunar.nn.Attention'),
  MLP = require('lunar.nn.MLP'),
  Block = require('lunar.nn.Block'),
  ViT = require('lunar.nn.ViT'),
  CrossEntropy = require('lunar.nn.CrossEntropy'),
  -- models as code: containers and leaves to compose (DESIGN.md "Models as code")
  Sequential = require('lunar.nn.Sequential'),
  Checkpoint = require('lunar.nn.Checkpoint'),
  Residual = require('lunar.nn.Residual'),
  Identity = require('lunar.nn.Identity'),
  Concat = require('lunar.nn.Concat'),
  Parallel = require('lunar.nn.Parallel'),
  MultiheadAttention = require('lunar.nn.MultiheadAttention'),
  GELU = require('lunar.nn.GELU'),
  ReLU = require('lunar.nn.ReLU'),
  SiLU = require('lunar.nn.SiLU'),
  RMSNorm = require('lunar.nn.RMSNorm'),
  MeanPool = require('lunar.nn.MeanPool'),
  SelectToken = require('lunar.nn.SelectToken'),
  ClassToken = require('lunar.nn.ClassToken'),
  PositionEmbedding = require('lunar.nn.PositionEmbedding'),
  Reshape = require('lunar.nn.Reshape'),
  Transpose = require('lunar.nn.Transpose'),
  Conv2d = require('lunar.nn.Conv2d'),
  Conv3d = require('lunar.nn.Conv3d'),
  ShiftedPatches = require('lunar.nn.ShiftedPatches'),
  gradcheck = require('lunar.nn.gradcheck'),
  flops = require('lunar.nn.flops'),
}

--- Whether v is a module (an instance of lunar.nn.Module or a subclass).
nn.is_module = nn.Sequential.is_module

--- The number of elements of a shape (a list of sizes; {} -> 1).
local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end
nn.numel = numel

--- The number of elements of a shape (a table of sizes; 1 for {}).
nn.numel = numel

--- Initializes one parameter tensor by its rule, from the Philox stream
-- named by its full name: the value depends only on (seed, name).
function nn.init_param(t, init, seed, name)
  local k = init.kind
  if k == 'zeros' then t:zero_()
  elseif k == 'ones' then t:fill_(1)
  elseif k == 'normal' then t:normal_(seed, name, init.mean or 0, init.std or 1)
  elseif k == 'uniform' then t:uniform_(seed, name, init.low or 0, init.high or 1)
  elseif k == 'trunc_normal' then
    t:trunc_normal_(seed, name, init.mean or 0, init.std or 1, init.a or -2, init.b or 2)
  else error('init_param: unknown init kind ' .. tostring(k) .. ' for ' .. name) end
end

--- The pieces of a tensor-parallel shard along its dim (Module:param's
-- `shard` = {dim=, groups=G, size=T, rank=, full_shape=}): dim `dim` of the
-- full tensor is G equal groups, each cut into T equal parts; rank r holds
-- part r of every group, the groups one after the other. E.g. timm's qkv
-- weight [3*C, C] split by heads is {dim=1, groups=3} (q, k and v rows of the
-- rank's heads); fc1's rows {dim=1, groups=1}; fc2's columns {dim=2, groups=1}.
-- @param shard the spec
-- @param rank optional rank (default shard.rank)
-- @return list of {full_offset=, local_offset=, len=} (0-based, along dim)
function nn.shard_pieces(shard, rank)
  rank = rank or shard.rank
  local F = shard.full_shape[shard.dim]
  local G = shard.groups or 1
  local group = F // G
  local part = group // shard.size
  local pieces = {}
  for g = 0, G - 1 do
    pieces[#pieces + 1] = {full_offset = g * group + rank * part, local_offset = g * part, len = part}
  end
  return pieces
end

--- Copies between a full tensor and a local one by N-d pieces (a shard's
-- `pieces` = {{full = ranges, ['local'] = ranges}, ...}, ranges 0-based
-- {start, length} per dim, lunar.checkpoint.reshard's form; the 2D / 2.5D
-- modes of lunar.parallel.tensor_2d): to_full true: full[piece] =
-- loc[piece], else loc[piece] = full[piece].
function nn.copy_pieces(full, loc, pieces, to_full)
  local function cut(t, ranges)
    for d, r in ipairs(ranges) do t = t:narrow(d, r[1] + 1, r[2]) end
    return t
  end
  for _, pc in ipairs(pieces) do
    local f, l = cut(full, pc.full), cut(loc, pc['local'])
    if to_full then f:copy_(l) else l:copy_(f) end
  end
end

--- Initializes a shard as its slice of the full tensor: draws the full tensor
-- (the stream of the full name) and copies this rank's pieces, so every
-- layout starts from the same weights.
local function init_shard(w, p, init, seed)
  local full = lunar.empty(p.shard.full_shape)
  nn.init_param(full, init, seed, p.name)
  if p.shard.pieces then
    nn.copy_pieces(full, w, p.shard.pieces, false)
    full:free()
    return
  end
  local d = p.shard.dim
  for _, pc in ipairs(nn.shard_pieces(p.shard)) do
    w:narrow(d, pc.local_offset + 1, pc.len):copy_(full:narrow(d, pc.full_offset + 1, pc.len))
  end
  full:free()
end

--- What nn.materialize lays out, without allocating: sets each module's
-- path and checks opts (errors at stack level `level`, default 2).
-- @return params (model:parameters()), offsets (name -> 1-based offset in the
--   flat buffers, in parameter order), total elements, precision
function nn.layout(model, opts, level)
  level = level or 2
  local scheme = opts and opts.init or 'timm'
  if scheme ~= 'timm' and scheme ~= 'pytorch' then error('materialize: unknown init scheme ' .. tostring(scheme), level) end
  local precision = opts and opts.precision or 'fp32'
  if precision ~= 'fp32' and precision ~= 'bf16' then
    error("materialize: precision must be 'fp32' or 'bf16', got " .. tostring(precision), level)
  end
  model:apply(function(m, path) m.path = path end)
  local params = model:parameters()
  local offsets, total = {}, 0
  for _, p in ipairs(params) do
    offsets[p.name] = total + 1
    total = total + numel(p.shape)
  end
  return params, offsets, total, precision
end

--- Initializes parameter p (an entry of model:parameters() after
-- nn.layout) into w (a tensor of p.shape) as nn.materialize does: its init
-- rule (opts.init 'pytorch': nn.Linear's default for Linear layers) drawn
-- from the stream of (seed, p.name); a tensor-parallel shard as its slice of
-- the full tensor.
function nn.init_into(w, p, seed, opts)
  local init = p.init
  -- Linear and its tensor-parallel forms (in_features is the full fan-in)
  if (opts and opts.init) == 'pytorch' and (p.module.__name == 'Linear' or p.module.is_parallel_linear) then
    local bound = 1 / math.sqrt(p.module.in_features)
    init = {kind = 'uniform', low = -bound, high = bound}
  end
  if p.shard then init_shard(w, p, init, seed or 0) else nn.init_param(w, init, seed or 0, p.name) end
end

--- Allocates one flat f32 buffer for every parameter of `model` and one for
-- their gradients (zeroed), points each parameter (module[name]) and its
-- gradient (module['grad_' .. name]) at a view, sets each module's path, and
-- initializes the weights from `seed`. A tensor-parallel shard (Module:param's
-- `shard`) is initialized as its slice of the full tensor. Records each
-- parameter's 1-based offset in the flat buffers in model._offsets[name].
-- Returns the model.
-- @param model a Module tree
-- @param seed integer
-- @param opts {init='timm'|'pytorch', precision='fp32'|'bf16'}: init 'pytorch'
--   replaces the init of every Linear by PyTorch's nn.Linear default
--   (kaiming_uniform with a = sqrt(5): weight and bias U(-1/sqrt(in),
--   1/sqrt(in))); 'timm' (default) keeps the modules' own rules. precision
--   'bf16' (the config key `precision`; Megatron-style mixed precision) also
--   allocates one flat bf16 buffer mirroring the f32 one: every parameter gets
--   a bf16 working copy module[name .. '_bf16'] (Module:parameters()'s
--   param_bf16), rounded from the f32 master weights now, by every optimizer
--   step (optim's fused *_step_bf16) and by Module:sync_working_weights();
--   every module gets .precision = 'bf16'. What is bf16 then: the GEMM weights
--   (Linear, the parallel linears, patch_embed.proj) read their working copy;
--   the activations inside a block, which are all a backward keeps there:
--   the LayerNorm outputs, qkv, the attention output, fc1's output and the
--   GELU output, and the attention's operands in backward (dout, dqkv); every
--   GEMM and the attention sum in f32. What stays f32: the master weights
--   (p.param, state_dict, checkpoints), gradients of parameters, optimizer
--   state, the residual stream and its gradient (Megatron's
--   fp32_residual_connection: the block inputs LayerNorm and the residual adds
--   read), the softmax statistics (lse), LayerNorm statistics, biases, the
--   1-dim and embedding parameters, logits and the loss. Raises an error when the
--   model's device has no native bf16 kernels (lunar.ops.bf16_supported: a
--   CPU without avx512_bf16).
function nn.materialize(model, seed, opts)
  local params, offsets, total, precision = nn.layout(model, opts, 3)
  local flat = lunar.empty({math.max(total, 1)})
  local flat_grad = lunar.zeros({math.max(total, 1)})
  for _, p in ipairs(params) do
    local n, off = numel(p.shape), offsets[p.name]
    local w = flat:narrow(1, off, n):view(p.shape)
    local g = flat_grad:narrow(1, off, n):view(p.shape)
    p.module[p.local_name] = w
    p.module['grad_' .. p.local_name] = g
    nn.init_into(w, p, seed, opts)
  end
  model._flat, model._flat_grad, model._offsets = flat, flat_grad, offsets
  if precision == 'bf16' then
    local ok, why = lunar.ops.bf16_supported(flat:device())
    if not ok then error("materialize: precision = 'bf16': " .. why, 2) end
    local flat16 = lunar.empty({math.max(total, 1)}, 'bf16', flat:device())
    for _, p in ipairs(params) do
      p.module[p.local_name .. '_bf16'] = flat16:narrow(1, offsets[p.name], numel(p.shape)):view(p.shape)
    end
    model._flat_bf16 = flat16
    model:apply(function(m) m.precision = 'bf16' end)
    model:sync_working_weights()
  end
  return model
end

return nn
