--- lunar.nn.Conv3d for the patchifying case, kernel = stride, no padding
-- (PyTorch's nn.Conv3d(in_channels, out_channels, kernel_size=k, stride=k)):
-- x [B, Cin, D, H, W] -> y [B, Cout, D/k, H/k, W/k], each spatial size a
-- multiple of k; weight [Cout, Cin, k, k, k], bias [Cout], PyTorch's default
-- init (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = Cin*k^3). lunar.nn.Conv2d
-- with three spatial dims: lunar.ops.patchify of the volume, then one GEMM.
local class = require('lunar.class')
local Conv2d = require('lunar.nn.Conv2d')

local Conv3d = class('Conv3d', Conv2d)

--- @param in_channels integer Cin
-- @param out_channels integer Cout
-- @param kernel_size integer k
-- @param opts optional {stride=k, padding=0, bias=true}
function Conv3d:__init(in_channels, out_channels, kernel_size, opts)
  Conv2d.__init(self, in_channels, out_channels, kernel_size, opts, 3)
end

return Conv3d
