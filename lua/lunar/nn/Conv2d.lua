--- lunar.nn.Conv2d: PyTorch's nn.Conv2d(in_channels, out_channels,
-- kernel_size=k, stride=s, padding=p) for two cases:
--  * the patchifying convolution, stride = kernel, no padding:
--    x [B, Cin, H, W] -> y [B, Cout, H/k, W/k], H and W multiples of k.
--    Computed as timm's PatchEmbed is: lunar.ops.patchify then one GEMM
--    ([B*L, Cin*k*k] x [Cin*k*k, Cout]), then the [B, L, Cout] tokens
--    permuted to PyTorch's [B, Cout, H/k, W/k].
--  * stride 1 with zero padding p (2D only; a convolutional stem, e.g. a
--    3 x 3 "same" convolution with p = 1): x [B, Cin, H, W] -> y [B, Cout,
--    H + 2p - k + 1, W + 2p - k + 1]. Computed by im2col as k*k shifted
--    copies of the image (copy (ky, kx) at output pixel (i, j) is x at
--    (i + ky - p, j + kx - p), 0 outside), stacked on the channels, then the
--    1 x 1 case of the GEMM above with the weight's taps reordered to
--    (ky, kx, cin). Backward sums the shifted-back copies (col2im).
-- weight [Cout, Cin, k, k], bias [Cout], PyTorch's default init
-- (kaiming_uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
-- fan_in = Cin*k*k, for weight and bias). Other strides, dilation or
-- groups: an error (no kernel yet). f32 (bf16 GEMM operands under
-- precision = 'bf16').
-- lunar.nn.Conv3d is the patchifying case on volumes [B, Cin, D, H, W] (its
-- 5th argument here: ndim = 3).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32 = require('lunar.nn.precision').f32
local shifted_views = require('lunar.nn.shifted_views')
local ops = lunar.ops

local Conv2d = class('Conv2d', Module)

--- @param in_channels integer Cin
-- @param out_channels integer Cout
-- @param kernel_size integer k
-- @param opts optional {stride=k, padding=0, bias=true}
-- @param ndim optional 2 (default) or 3: the spatial dims (Conv3d passes 3)
function Conv2d:__init(in_channels, out_channels, kernel_size, opts, ndim)
  Module.__init(self)
  opts = opts or {}
  self.ndim = ndim or 2
  local what = 'nn.Conv' .. self.ndim .. 'd'
  local k = kernel_size
  if math.type(k) ~= 'integer' or k < 1 then error(what .. ': kernel_size must be a positive integer', 3) end
  local stride, padding = opts.stride or k, opts.padding or 0
  local patchify = stride == k and padding == 0
  local same = stride == 1 and math.type(padding) == 'integer' and padding >= 0 and padding < k and self.ndim == 2
  if not (patchify or same) or (opts.dilation or 1) ~= 1 or (opts.groups or 1) ~= 1 then
    error(string.format('%s: only stride = kernel_size (%d) without padding (the patchifying convolution)%s, ' ..
      'dilation 1, groups 1 are implemented; got stride %s, padding %s', what, k,
      self.ndim == 2 and ' or stride 1 with padding 0..k-1' or '', tostring(stride), tostring(padding)), 3)
  end
  self.stride, self.padding = stride, padding
  self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
  self.fan_in = in_channels * k ^ self.ndim // 1
  local bound = 1 / math.sqrt(self.fan_in)
  local wshape = {out_channels, in_channels}
  for _ = 1, self.ndim do wshape[#wshape + 1] = k end
  self:param('weight', wshape, {kind = 'uniform', low = -bound, high = bound})
  self.has_bias = opts.bias ~= false
  if self.has_bias then self:param('bias', {out_channels}, {kind = 'uniform', low = -bound, high = bound}) end
end

function Conv2d:extra_repr()
  return string.format('%d, %d, kernel_size=%d, stride=%d%s', self.in_channels, self.out_channels,
    self.kernel_size, self.stride, self.padding > 0 and (', padding=' .. self.padding) or '')
end

-- Whether this is the stride-1 (im2col by shifted copies) case.
function Conv2d:shifted() return self.stride ~= self.kernel_size or self.padding > 0 end

-- Calls fn(col, img) for each tap (ky, kx) of the k x k kernel, in the order
-- t = ky * k + kx: col the view of channel block t of the [B, k*k*Cin, Ho,
-- Wo] tensor `cols` that the tap fills, img the view of the [B, Cin, H, W]
-- tensor `x` it reads (output pixel (i, j) reads (i + ky - p, j + kx - p);
-- the part of the output that reads outside the image is not visited).
local function each_tap(cols, x, k, p, fn)
  local shifts = {}
  for ky = 0, k - 1 do
    for kx = 0, k - 1 do shifts[#shifts + 1] = {ky - p, kx - p} end
  end
  shifted_views(cols, x, shifts, fn)
end

-- The weight as the GEMM of the shifted case reads it: [Cout, k*k*Cin], taps
-- (ky, kx) outer and input channels inner, as each_tap stacks them.
local function tap_major(w, cout, cin, kk)
  local v = w:view(cout, cin, kk)
  local t = v:transpose(2, 3)
  local c = t:contiguous()
  local r = c:view(cout, kk * cin)
  t:free(); v:free(); c:free()
  return r
end

-- The GEMM's output t [B, L, Cout] as the image y [B, Cout, ...] of shape
-- out_shape (a contiguous copy; t freed).
local function tokens_to_image(t, out_shape)
  local v = t:transpose(2, 3)                              -- [B, Cout, L]
  local c = v:contiguous()
  local y = c:view(out_shape)
  c:free(); v:free(); t:free()
  return y
end

-- The image gradient dy [B, Cout, ...] as the GEMM's [B, L, Cout] (a contiguous copy).
local function image_to_tokens(dy, cout, L)
  local dc = dy:contiguous()
  local d3 = dc:view(dy:shape()[1], cout, L)
  local dv = d3:transpose(2, 3)
  local dt = dv:contiguous()
  dv:free(); d3:free(); dc:free()
  return dt
end

--- x [B, Cin, H, W] -> y [B, Cout, H/k, W/k] (Conv3d: [B, Cin, D, H, W] ->
-- [B, Cout, D/k, H/k, W/k]); ctx owns the patches.
function Conv2d:forward(x)
  if self:shifted() then return self:forward_shifted(x) end
  local s = x:shape()
  local k = self.kernel_size
  local ok = #s == self.ndim + 2 and s[2] == self.in_channels
  local out_shape, L = {s[1], self.out_channels}, 1
  for i = 3, #s do
    ok = ok and s[i] % k == 0
    out_shape[i] = s[i] // k
    L = L * (s[i] // k)
  end
  if not ok then
    local want = {'B', self.in_channels}
    for i = 1, self.ndim do want[i + 2] = ({'H', 'W'})[i - self.ndim + 2] or 'D' end
    self:shape_error('image (spatial sizes multiples of the kernel ' .. k .. ')', s, want)
  end
  local xf, copied = f32(x)                                -- bf16 under precision = 'bf16'
  local xc = xf:contiguous()
  local patches = ops.patchify(xc, k)                      -- [B, L, Cin*k^ndim]
  xc:free()
  if copied then xf:free() end
  local w = self:gemm_weight('weight'):view(self.out_channels, self.fan_in)
  local t = ops.linear(patches, w, self.bias)              -- [B, L, Cout]
  w:free()
  return tokens_to_image(t, out_shape), Context({patches = patches}, {shape = s, L = L})
end

--- dy [B, Cout, H/k, W/k] -> dx [B, Cin, H, W] (nil when need_dx is false);
-- accumulates the weight and bias gradients.
function Conv2d:backward(ctx, dy, need_dx)
  if ctx.cols_shape then return self:backward_shifted(ctx, dy, need_dx) end
  local dt = image_to_tokens(dy, self.out_channels, ctx.L)  -- [B, L, Cout]
  local w = self:gemm_weight('weight'):view(self.out_channels, self.fan_in)
  local gw = self.grad_weight:view(self.out_channels, self.fan_in)
  local dp = ops.linear_backward(dt, ctx.patches, w, gw, self.has_bias and self.grad_bias or nil, need_dx ~= false)
  dt:free(); w:free(); gw:free()
  local shape = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local dx = ops.patchify_backward(dp, shape, self.kernel_size)
  dp:free()
  return dx
end

--- The stride-1 case: x [B, Cin, H, W] -> y [B, Cout, Ho, Wo], Ho = H + 2p
-- - k + 1 (Wo alike); ctx owns the [B, Ho*Wo, k*k*Cin] columns.
function Conv2d:forward_shifted(x)
  local s = x:shape()
  local k, p = self.kernel_size, self.padding
  if #s ~= 4 or s[2] ~= self.in_channels or s[3] + 2 * p < k or s[4] + 2 * p < k then
    self:shape_error(string.format('image (at least %d x %d with padding %d)', k - 2 * p, k - 2 * p, p), s,
      {'B', self.in_channels, 'H', 'W'})
  end
  local B, Ho, Wo = s[1], s[3] + 2 * p - k + 1, s[4] + 2 * p - k + 1
  local xf, copied = f32(x)
  local cols_shape = {B, k * k * self.in_channels, Ho, Wo}
  local cols = lunar.zeros(cols_shape, xf:dtype(), xf:device())
  each_tap(cols, xf, k, p, function(c, i) c:copy_(i) end)
  if copied then xf:free() end
  local patches = ops.patchify(cols, 1)                    -- [B, Ho*Wo, k*k*Cin]
  cols:free()
  local w = tap_major(self:gemm_weight('weight'), self.out_channels, self.in_channels, k * k)
  local t = ops.linear(patches, w, self.bias)              -- [B, Ho*Wo, Cout]
  w:free()
  return tokens_to_image(t, {B, self.out_channels, Ho, Wo}), Context({patches = patches},
    {shape = s, cols_shape = cols_shape})
end

--- dy [B, Cout, Ho, Wo] -> dx [B, Cin, H, W] (nil when need_dx is false):
-- the GEMM's backward, the weight gradient's taps put back in PyTorch's
-- order and added into grad_weight, then col2im (the shifted-back sum).
function Conv2d:backward_shifted(ctx, dy, need_dx)
  local o = ctx.cols_shape
  local K, cout, cin, kk = o[2], self.out_channels, self.in_channels, self.kernel_size * self.kernel_size
  local dt = image_to_tokens(dy, cout, o[3] * o[4])       -- [B, Ho*Wo, Cout]
  local w = tap_major(self:gemm_weight('weight'), cout, cin, kk)
  local gt = lunar.zeros({cout, K}, self.grad_weight:dtype())   -- the weight gradient, taps outer
  local dp = ops.linear_backward(dt, ctx.patches, w, gt, self.has_bias and self.grad_bias or nil, need_dx ~= false)
  dt:free(); w:free()
  local g3 = gt:view(cout, kk, cin)
  local gtr = g3:transpose(2, 3)                           -- [Cout, Cin, k*k]
  local gc = gtr:contiguous()
  local acc = self.grad_weight:view(cout, cin, kk)
  lunar.ops.add_(acc, gc)
  acc:free(); gc:free(); gtr:free(); g3:free(); gt:free()
  local shape = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local dcols = ops.patchify_backward(dp, o, 1)           -- [B, k*k*Cin, Ho, Wo]
  dp:free()
  local dx = lunar.zeros(shape, dcols:dtype(), dy:device())
  each_tap(dcols, dx, self.kernel_size, self.padding, function(g, a)
    local sum = a + g
    a:copy_(sum)
    sum:free()
  end)
  dcols:free()
  return dx
end

return Conv2d
