--- lunar.parallel.PatchEmbed2D: the patch embedding (timm's PatchEmbed: a
-- convolution with kernel = stride = patch, as patchify then a GEMM) on the
-- 2D / 2.5D grid, as Colossal-AI's legacy PatchEmbedding2D splits it: rank
-- (k, i, j) embeds the images of its batch block k*q + i into the output
-- channels of feature block j. patch_embed.proj.weight [dim, C, P, P] and
-- .bias [dim] are vector pieces along their output channels (1/q^2 of each;
-- lunar.parallel.tensor_2d), gathered over the column group for the GEMM,
-- their gradients reduce-scattered back.
--
-- forward: images [B, C, S..] (the whole micro-batch, as every tensor rank
-- receives it) -> tokens [B/(dq), L, dim/q]; backward: the image gradient
-- [B, C, S..] (the patches' gradient all-reduced over the row, the blocks
-- all-gathered over the batch group), nil when need_dx is false.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local PatchEmbed = require('lunar.nn.PatchEmbed')
local tensor_2d = require('lunar.parallel.tensor_2d')
local ops = lunar.ops

local PatchEmbed2D = class('PatchEmbed2D', Module)

--- @param opts nn.PatchEmbed's {img_size=, patch_size=, in_chans=, embed_dim=,
--   ndim=} and tp (a tensor_2d factory)
function PatchEmbed2D:__init(opts)
  Module.__init(self)
  local tp = assert(opts.tp, 'PatchEmbed2D: opts.tp (a tensor_2d factory) is required')
  -- the plain module's geometry and init rules, without its parameters
  local plain = PatchEmbed(opts)
  for _, k in ipairs({'img_size', 'patch_size', 'in_chans', 'embed_dim', 'ndim', 'grid', 'num_patches', 'fan_in'}) do
    self[k] = plain[k]
  end
  self.tp = tp
  self.dim_local = self.embed_dim // tp.q
  local proj = self:add('proj', Module())
  proj.__name = plain.proj.__name
  for _, p in ipairs(plain.proj._params) do
    local full = p.shape
    tp:vector_param(proj, p.name, full, 1, p.init)
  end
end

function PatchEmbed2D:extra_repr()
  return string.format('img %d, patch %d, %d -> %d (%d on this rank), %dD', self.img_size, self.patch_size,
    self.in_chans, self.embed_dim, self.dim_local, self.ndim)
end

--- img [B, C, S..] -> tokens [B/(dq), L, dim/q]; ctx owns the patches.
function PatchEmbed2D:forward(img)
  local shape = PatchEmbed.check_image(self, img)
  local tp = self.tp
  local b = tp:local_batch(shape[1])
  local mine = img:narrow(1, tp:batch_block() * b + 1, b)
  local mc = mine:is_contiguous() and mine or mine:contiguous()
  local patches = ops.patchify(mc, self.patch_size)
  if mc ~= mine then mc:free() end
  mine:free()
  local w = tensor_2d.reshape(tp:gather_vector(self.proj, 'weight', true), {self.dim_local, self.fan_in})
  local bias = tp:gather_vector(self.proj, 'bias')
  local y = ops.linear(patches, w, bias)
  w:free(); bias:free()
  return y, Context({patches = patches}, {img_shape = shape})
end

--- Accumulates the weight and bias pieces' gradients; returns dimg [B, C, S..]
-- (nil when need_dx is false).
function PatchEmbed2D:backward(ctx, dy, need_dx)
  local tp = self.tp
  local c = self.dim_local
  local want = need_dx ~= false
  local w = tensor_2d.reshape(tp:gather_vector(self.proj, 'weight', true), {c, self.fan_in})
  local gw = lunar.zeros({c, self.fan_in}, 'f32', dy:device())
  local gb = lunar.zeros({c}, 'f32', dy:device())
  local dp = ops.linear_backward(dy, ctx.patches, w, gw, gb, want)
  w:free()
  local ws = self.proj.weight:shape()
  ws[1] = c
  gw = tensor_2d.reshape(gw, ws)
  tp:reduce_vector_grad(self.proj, 'weight', gw)
  tp:reduce_vector_grad(self.proj, 'bias', gb)
  gw:free(); gb:free()
  local img_shape = ctx.img_shape
  ctx:free()
  if not want then return nil end
  tp.groups.row:all_reduce(dp, 'sum')        -- the patches' gradient: a sum over the feature blocks
  local block_shape = {table.unpack(img_shape)}
  block_shape[1] = img_shape[1] // (tp:num_batch_blocks())
  local dblk = ops.patchify_backward(dp, block_shape, self.patch_size)
  dp:free()
  local buf = lunar.empty({tp:num_batch_blocks(), dblk:numel()}, 'f32', dblk:device())
  tp.groups.batch:all_gather(buf, dblk)
  dblk:free()
  return tensor_2d.reshape(buf, img_shape)
end

return PatchEmbed2D
