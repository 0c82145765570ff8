--- lunar.nn.SiLU: y = x * sigmoid(x) (Elfwing et al. 2018, "swish"; PyTorch's
-- nn.SiLU). Any shape, f32. Kernels: lunar.ops.activation(x, 'silu').
local class = require('lunar.class')
local Activation = require('lunar.nn.Activation')

local SiLU = class('SiLU', Activation)

function SiLU:__init() Activation.__init(self, 'silu') end

return SiLU
