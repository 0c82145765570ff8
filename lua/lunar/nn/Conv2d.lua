--- lunar.nn.Conv2d for the patchifying case, kernel = stride, no padding
-- (PyTorch's nn.Conv2d(in_channels, out_channels, kernel_size=k, stride=k)):
-- x [B, Cin, H, W] -> y [B, Cout, H/k, W/k], H and W multiples of k.
-- weight [Cout, Cin, k, k], bias [Cout], PyTorch's default init
-- (kaiming_uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
-- fan_in = Cin*k*k, for weight and bias). Computed as timm's PatchEmbed is:
-- lunar.ops.patchify then one GEMM ([B*L, Cin*k*k] x [Cin*k*k, Cout]), then
-- the [B, L, Cout] tokens permuted to PyTorch's [B, Cout, H/k, W/k]. Other
-- strides, padding, dilation or groups: an error (no kernel yet). f32.
-- lunar.nn.Conv3d is the same on volumes [B, Cin, D, H, W] (its 5th argument
-- here: ndim = 3).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32 = require('lunar.nn.precision').f32
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
  if stride ~= k or padding ~= 0 or (opts.dilation or 1) ~= 1 or (opts.groups or 1) ~= 1 then
    error(string.format('%s: only stride = kernel_size (%d), padding 0, dilation 1, groups 1 is ' ..
      'implemented (the patchifying convolution); got stride %s, padding %s', what, k, tostring(stride),
      tostring(padding)), 3)
  end
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
  return string.format('%d, %d, kernel_size=%d, stride=%d', self.in_channels, self.out_channels,
    self.kernel_size, self.kernel_size)
end

--- x [B, Cin, H, W] -> y [B, Cout, H/k, W/k] (Conv3d: [B, Cin, D, H, W] ->
-- [B, Cout, D/k, H/k, W/k]); ctx owns the patches.
function Conv2d:forward(x)
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
  local v = t:transpose(2, 3)                              -- [B, Cout, L]
  local c = v:contiguous()
  local y = c:view(out_shape)
  c:free(); v:free(); t:free()
  return y, Context({patches = patches}, {shape = s, L = L})
end

--- dy [B, Cout, H/k, W/k] -> dx [B, Cin, H, W] (nil when need_dx is false);
-- accumulates the weight and bias gradients.
function Conv2d:backward(ctx, dy, need_dx)
  local B, L = dy:shape()[1], ctx.L
  local dc = dy:contiguous()
  local d3 = dc:view(B, self.out_channels, L)
  local dv = d3:transpose(2, 3)
  local dt = dv:contiguous()                               -- [B, L, Cout]
  dv:free(); d3:free(); dc:free()
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

return Conv2d
