--- lunar.nn.Module: the base of every module (torch/nn lineage, DESIGN.md
-- "Models as code").
--
-- The contract, the same for every module (layers, containers, the loss
-- lunar.nn.CrossEntropy, the parallel mappings and linears of lunar.parallel):
--
--   y, ctx = m:forward(x)             a loss: loss, ctx = crit:forward(logits, target)
--   dx = m:backward(ctx, dy, need_dx)
--
-- - forward's one argument is the input; the only second argument is a
--   loss's target (torch/nn's Criterion:forward(input, target)). Nothing
--   else is passed per call: what a module computes in (its output dtype
--   under precision = 'bf16', its dropout stream) is its own configuration.
-- - `ctx` is a lunar.nn.Context: it OWNS the tensors the module created and
--   kept for backward and its children's contexts, and only REFERS to the
--   input x, which the caller keeps alive and unchanged until the backward
--   (or ctx:free()). The output y belongs to the caller; y may be x itself
--   (an identity: Dropout off, CopyToTP).
-- - backward accumulates parameter gradients into the module's grad views
--   (torch/nn's accGradParameters), returns dx and releases the context
--   (ctx.freed; a second backward on it is an error). `dy` stays the
--   caller's; dx belongs to the caller and may be dy itself (an identity), so
--   a caller frees dy only when dx ~= dy. need_dx (default true) = false: the
--   caller does not want dx; backward returns nil and skips computing it where
--   the module can (Linear, PatchEmbed, the first ViT stage). A loss's dy is
--   the gradient of the loss (a number, default 1).
-- - A context not used for backward (evaluation, an abandoned step) is
--   released with ctx:free(), or by `local y, ctx <close> = m:forward(x)`.
-- - Nothing about one call is stored on the module (a pipeline keeps many
--   contexts in flight) and a module never renames its children while it
--   runs: paths are set once, by nn.materialize.
--
-- Parameters are declared at construction with `self:param(name, shape, init)`
-- and receive storage when the root module is materialized
-- (`lunar.nn.materialize(model, seed)`): one flat buffer for all weights and one
-- for all gradients, each parameter a view into them (llm.c's
-- malloc_and_point_parameters, nn's getParameters). Initialization draws from
-- the Philox stream named by the parameter's full name, so weights depend only
-- on the seed and the name, never on the parallel layout.
local class = require('lunar.class')

local Module = class('Module')

--- Initializes the bookkeeping of a module; subclasses call it first.
function Module:__init()
  self._params = {}      -- list of {name=, shape=, init=, no_weight_decay=}
  self._children = {}    -- list of {name=, module=}
  self.training = true
  self.path = ''
end

--- Declares a parameter.
-- @param name local name (timm's: 'weight', 'bias', 'cls_token', ...)
-- @param shape table of sizes
-- @param init {kind='trunc_normal'|'normal'|'uniform'|'zeros'|'ones', std=, a=, b=, low=, high=}
-- @param opts {no_weight_decay=bool, shard=, sequence_parallel=bool}: `shard`
--   marks a tensor-parallel shard (shape is then the local shape): {dim=d,
--   groups=G, size=T, rank=r, full_shape=} - dim d of the full tensor is G
--   equal groups, each cut into T equal parts, and this rank holds part r of
--   every group (lunar.nn.shard_pieces); or {pieces=, full_shape=,
--   replica=} - N-d pieces {full = ranges, ['local'] = ranges} (0-based
--   {start, length} per dim; lunar.nn.copy_pieces), replica > 0 a copy held
--   by another rank too (not counted twice by the gradient norm, not written
--   by checkpoints); materialize initializes it as that slice of the full
--   tensor. `sequence_parallel` marks a replicated
--   parameter that sees only this rank's tokens, whose gradient is a partial
--   sum over the tensor-parallel group (Megatron's attribute of that name).
function Module:param(name, shape, init, opts)
  local p = {name = name, shape = shape, init = init, no_weight_decay = opts and opts.no_weight_decay,
    shard = opts and opts.shard, sequence_parallel = opts and opts.sequence_parallel}
  table.insert(self._params, p)
  return p
end

--- Registers a child module under `name` (so its parameters are named name.<...>).
function Module:add(name, module)
  table.insert(self._children, {name = name, module = module})
  self[name] = module
  return module
end

--- Visits this module and every descendant, depth first: fn(module, path).
function Module:apply(fn, path)
  path = path or ''
  fn(self, path)
  for _, c in ipairs(self._children) do
    c.module:apply(fn, path == '' and c.name or (path .. '.' .. c.name))
  end
end

--- The parameters in declaration order, each {name=full name, param=tensor,
-- grad=tensor, param_bf16=tensor or nil, shape=, no_weight_decay=, module=,
-- shard=, sequence_parallel=} (shard and sequence_parallel: see
-- Module:param; param_bf16: the bf16 working copy of precision = 'bf16', see
-- nn.materialize). Tensors exist after materialize.
function Module:parameters()
  local out = {}
  self:apply(function(m, path)
    for _, p in ipairs(m._params) do
      table.insert(out, {
        name = path == '' and p.name or (path .. '.' .. p.name),
        param = m[p.name], grad = m['grad_' .. p.name], param_bf16 = m[p.name .. '_bf16'], shape = p.shape,
        init = p.init,
        no_weight_decay = p.no_weight_decay or #p.shape <= 1, module = m, local_name = p.name,
        shard = p.shard, sequence_parallel = p.sequence_parallel,
      })
    end
  end)
  return out
end

--- Number of parameter elements (no allocation needed).
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do
    local k = 1
    for _, s in ipairs(p.shape) do k = k * s end
    n = n + k
  end
  return n
end

--- precision = 'bf16' (nn.materialize): rounds every fp32 master weight into
-- its bf16 working copy (one cast of the flat buffer). The optimizer steps do
-- this themselves; call it after writing master weights any other way
-- (p.param:copy_, a checkpoint or timm load: lunar.checkpoint,
-- lunar.parallel.load_full_parameters and lunar.timm call it). Call it on the
-- materialized root; a no-op in fp32. Returns self.
function Module:sync_working_weights()
  if self._flat_bf16 then lunar.ops.cast_bf16_(self._flat_bf16, self._flat) end
  return self
end

--- The weight a GEMM reads: the bf16 working copy under precision = 'bf16',
-- else the fp32 parameter itself.
function Module:gemm_weight(name)
  return self[name .. '_bf16'] or self[name]
end

--- Sets every parameter gradient to zero (one memset of the flat buffer when
-- materialized).
function Module:zero_grad()
  if self._flat_grad then self._flat_grad:zero_() return end
  for _, p in ipairs(self:parameters()) do if p.grad then p.grad:zero_() end end
end

--- Training mode (dropout active) for this module and its descendants.
function Module:train(on)
  if on == nil then on = true end
  self:apply(function(m) m.training = on end)
  return self
end

--- Evaluation mode.
function Module:evaluate() return self:train(false) end

--- The parameters as a name -> tensor table (timm names).
function Module:state_dict()
  local sd = {}
  for _, p in ipairs(self:parameters()) do sd[p.name] = p.param end
  return sd
end

--- Raises an error that names this module's path and the shapes involved.
function Module:shape_error(what, got, expected)
  local function s(t)
    if type(t) == 'table' then return '[' .. table.concat(t, ', ') .. ']' end
    return tostring(t)
  end
  error(string.format('%s (%s): %s: expected %s, got %s', self.path ~= '' and self.path or '<root>',
    self.__name or 'Module', what, s(expected), s(got)), 3)
end

function Module:__tostring()
  local lines = {}
  local function rec(m, name, indent)
    local extra = m.extra_repr and m:extra_repr() or ''
    table.insert(lines, string.rep('  ', indent) .. (name ~= '' and (name .. ': ') or '') ..
      (m.__name or 'Module') .. (extra ~= '' and ('(' .. extra .. ')') or ''))
    for _, c in ipairs(m._children) do rec(c.module, c.name, indent + 1) end
  end
  rec(self, '', 0)
  return table.concat(lines, '\n')
end

return Module
