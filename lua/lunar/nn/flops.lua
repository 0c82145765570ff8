--- lunar.nn.flops: the training FLOPs of one image through a model (models as
-- code), for the logs' FLOP/s (hooks.ThroughputHook, log.step_meter).
--
--   f = nn.flops.train_flops_per_image(model, image_shape)
--     model materialized (a whole model, not a pipeline stage or a
--     tensor-parallel shard); image_shape e.g. {1, 28, 28} (no batch dim)
--   f = nn.flops.forward_flops(model, x)   forward FLOPs of input x (any batch)
--   f = nn.flops.train_flops_per_image_parallel(part, image_shape, g)
--     the whole model's, from this rank's part (a pipeline stage, tensor-parallel
--     shards) and the grid g: collective over g.mp_group, nothing else built
--
-- Counted by one forward in evaluation mode (the model's train/evaluate
-- flags restored after): every module that has a `flops(x_shape, y_shape)`
-- method or a rule below adds its forward FLOPs for the shapes it saw, a
-- multiply-add being 2 FLOPs; the training FLOPs are 3 x the forward's
-- (backward = 2 x forward: the input and the weight gradients), the
-- convention of models.vit_train_flops_per_image (PERF_ANCHORS.md, llm.c's
-- MFU). The rules:
--   Linear                   2 * in * out * rows (rows = numel(x) / in)
--   Conv2d, Conv3d           2 * fan_in * numel(y)   (fan_in = Cin * k^d)
--   PatchEmbed               2 * fan_in * embed_dim * patches
--   Attention                4 * B * N^2 * C  (q k^T and p v; qkv and proj are Linear children)
--   MultiheadAttention       its method: in_proj's GEMM + 4 * B * N^2 * E (out_proj a Linear child)
--   ColumnParallelLinear     2 * in * out_local * rows     } this rank's share of a layer
--   RowParallelLinear        2 * in_local * out * rows     } split across the tensor group
--   Attention (split)        4 * B * N^2 * C * local_heads / heads
-- Everything else (norms, activations, adds, embeddings, pooling) is not
-- counted: O(numel) next to the GEMMs' O(numel * width).
local flops = {}

local function numel(s) local n = 1 for i = 1, #s do n = n * s[i] end return n end

--- Forward FLOPs of one call by class name: fn(module, x_shape, y_shape).
flops.rules = {
  Linear = function(m, xs) return 2 * m.in_features * m.out_features * (numel(xs) // m.in_features) end,
  Conv2d = function(m, _, ys) return 2 * m.fan_in * numel(ys) end,
  Conv3d = function(m, _, ys) return 2 * m.fan_in * numel(ys) end,
  PatchEmbed = function(m, xs) return 2 * m.fan_in * m.embed_dim * m.num_patches * xs[1] end,
  Attention = function(m, xs) return 4 * xs[1] * xs[2] * xs[2] * m.dim * m.local_heads // m.num_heads end,
  ColumnParallelLinear = function(m, xs) return 2 * m.in_features * m.out_local * (numel(xs) // m.in_features) end,
  RowParallelLinear = function(m, xs) return 2 * m.in_local * m.out_features * (numel(xs) // m.in_local) end,
}

-- Whether a module's count is its share of a layer split across the tensor group
-- (summed over the group) rather than a replicated layer's (counted once).
local function is_split(m)
  return m.__name == 'ColumnParallelLinear' or m.__name == 'RowParallelLinear' or
    (m.__name == 'Attention' and m.local_heads ~= m.num_heads)
end

-- The forward FLOPs of x through model, as two sums: the split layers' shares and the rest.
local function count(model, x)
  local split, rest = 0, 0
  local wrapped, modes = {}, {}
  model:apply(function(m)
    modes[#modes + 1] = {m, m.training}
    local rule = m.flops or flops.rules[m.__name]
    if rule and rawget(m, 'forward') == nil then
      local forward = m.forward
      local sharded = is_split(m)
      m.forward = function(self, inp)
        local y, ctx = forward(self, inp)
        local f = rule(self, inp:shape(), y:shape())
        if sharded then split = split + f else rest = rest + f end
        return y, ctx
      end
      wrapped[#wrapped + 1] = m
    end
  end)
  model:evaluate()
  local ok, y, ctx = pcall(model.forward, model, x)
  for _, m in ipairs(wrapped) do m.forward = nil end
  for _, mm in ipairs(modes) do mm[1].training = mm[2] end
  if not ok then error(y, 0) end
  ctx:free()
  if y ~= x then y:free() end
  return split, rest
end

--- The forward FLOPs of x through `model` (materialized): one forward in
-- evaluation mode, counted by the rules above and the modules' own flops
-- methods. Frees what the forward made; restores every module's training flag.
function flops.forward_flops(model, x)
  local split, rest = count(model, x)
  return split + rest
end

--- Training FLOPs (forward + backward = 3 x forward) of one image of shape
-- `image_shape` (no batch dim) through `model`.
function flops.train_flops_per_image(model, image_shape)
  local s = {1}
  for i, d in ipairs(image_shape) do s[i + 1] = d end
  local x = lunar.zeros(s)
  local ok, f = pcall(flops.forward_flops, model, x)
  x:free()
  if not ok then error(f, 0) end
  return 3 * f
end

--- Training FLOPs of one image through the whole model when this rank holds
-- a part of it (g.pp_size > 1: a pipeline stage; g.tp_size > 1: layers split
-- across the tensor group), without building the whole: one evaluation-mode
-- forward of this rank's part (an image on the first stage, zeros of
-- part:hidden_shape(1) on the others), the split layers' shares summed over
-- the tensor group, the replicated layers counted once per stage (tensor rank
-- 0's), the stages summed: one all_reduce over g.mp_group (the pipeline x
-- tensor group of this data rank). Collective: every rank of the group calls
-- it (the forward's own tensor-parallel collectives included).
function flops.train_flops_per_image_parallel(part, image_shape, g)
  local s
  if g.stage.is_first then
    s = {1}
    for i, d in ipairs(image_shape) do s[i + 1] = d end
  else
    s = part:hidden_shape(1)
  end
  local x = lunar.zeros(s)
  local ok, split, rest = pcall(count, part, x)
  x:free()
  if not ok then error(split, 0) end
  local mine = split + (g.tp_rank == 0 and rest or 0)
  return 3 * g.mp_group:all_reduce_number(mine, 'sum')
end

return flops
