--- lunar.nn.PatchEmbed: a convolution with kernel = stride = patch size, as
-- patchify then linear (timm's PatchEmbed, flatten=True). Images are
-- [B, C, H, W] (2D) or [B, C, D, H, W] (3D); the output is [B, L, dim] with
-- L = prod(size / patch). The weight has timm's conv layout
-- [dim, C, P, P(, P)] and PyTorch's Conv default init (kaiming_uniform with
-- a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local PatchEmbed = class('PatchEmbed', Module)

--- @param opts {img_size=, patch_size=, in_chans=, embed_dim=, ndim=2|3}
function PatchEmbed:__init(opts)
  Module.__init(self)
  self.img_size, self.patch_size = opts.img_size, opts.patch_size
  self.in_chans, self.embed_dim, self.ndim = opts.in_chans, opts.embed_dim, opts.ndim or 2
  if self.img_size % self.patch_size ~= 0 then
    error(string.format('patch_embed: IMG_SIZE %d is not a multiple of PATCH_SIZE %d',
      self.img_size, self.patch_size), 0)
  end
  self.grid = self.img_size // self.patch_size
  local function ipow(b, e) local r = 1 for _ = 1, e do r = r * b end return r end
  self.num_patches = ipow(self.grid, self.ndim)
  local fan_in = self.in_chans * ipow(self.patch_size, self.ndim)
  self.fan_in = fan_in
  local bound = 1 / math.sqrt(fan_in)
  local wshape = {self.embed_dim, self.in_chans}
  for _ = 1, self.ndim do table.insert(wshape, self.patch_size) end
  local proj = self:add('proj', Module())
  proj.__name = 'Conv' .. self.ndim .. 'd'
  proj:param('weight', wshape, {kind = 'uniform', low = -bound, high = bound})
  proj:param('bias', {self.embed_dim}, {kind = 'uniform', low = -bound, high = bound})
end

function PatchEmbed:extra_repr()
  return string.format('img %d, patch %d, %d -> %d, %dD', self.img_size, self.patch_size, self.in_chans,
    self.embed_dim, self.ndim)
end

--- Raises the module's shape error unless img is [B, in_chans, img_size..]
-- (shared with lunar.parallel's PatchEmbed2D); returns img's shape.
function PatchEmbed.check_image(m, img)
  local shape = img:shape()
  local ok = #shape == m.ndim + 2 and shape[2] == m.in_chans
  for i = 3, #shape do ok = ok and shape[i] == m.img_size end
  if not ok then
    local want = {'B', m.in_chans}
    for _ = 1, m.ndim do table.insert(want, m.img_size) end
    m:shape_error('image', shape, want)
  end
  return shape
end

--- img [B, C, S..] -> tokens [B, L, dim]; ctx owns the patches.
function PatchEmbed:forward(img)
  local shape = PatchEmbed.check_image(self, img)
  local patches = ops.patchify(img, self.patch_size)
  local w = self.proj:gemm_weight('weight'):view(self.embed_dim, self.fan_in)   -- bf16 under precision = 'bf16'
  return ops.linear(patches, w, self.proj.bias), Context({patches = patches}, {img_shape = shape})
end

--- Accumulates the conv weight and bias gradients; returns dimg [B, C, S..]
-- (nil when need_dx is false).
function PatchEmbed:backward(ctx, dy, need_dx)
  local w = self.proj:gemm_weight('weight'):view(self.embed_dim, self.fan_in)
  local gw = self.proj.grad_weight:view(self.embed_dim, self.fan_in)
  local dp = ops.linear_backward(dy, ctx.patches, w, gw, self.proj.grad_bias, need_dx ~= false)
  local img_shape = ctx.img_shape
  ctx:free()
  if need_dx == false then return nil end
  local dimg = ops.patchify_backward(dp, img_shape, self.patch_size)
  dp:free()
  return dimg
end

return PatchEmbed
