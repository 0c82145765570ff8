--- lunar.nn.flops: the training FLOPs of one image through a model (models as
-- code), for the logs' FLOP/s (hooks.ThroughputHook, log.step_meter).
--
--   f = nn.flops.train_flops_per_image(model, image_shape)
--     model materialized (a whole model, not a pipeline stage or a
--     tensor-parallel shard); image_shape e.g. {1, 28, 28} (no batch dim)
--   f = nn.flops.forward_flops(model, x)   forward FLOPs of input x (any batch)
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
  Attention = function(m, xs) return 4 * xs[1] * xs[2] * xs[2] * m.dim end,
}

--- The forward FLOPs of x through `model` (materialized): one forward in
-- evaluation mode, counted by the rules above and the modules' own flops
-- methods. Frees what the forward made; restores every module's training flag.
function flops.forward_flops(model, x)
  local total = 0
  local wrapped, modes = {}, {}
  model:apply(function(m)
    modes[#modes + 1] = {m, m.training}
    local rule = m.flops or flops.rules[m.__name]
    if rule and rawget(m, 'forward') == nil then
      local forward = m.forward
      m.forward = function(self, inp)
        local y, ctx = forward(self, inp)
        total = total + rule(self, inp:shape(), y:shape())
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
  return total
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

return flops
