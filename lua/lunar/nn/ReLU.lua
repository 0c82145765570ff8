--- lunar.nn.ReLU: y = max(x, 0) (PyTorch's nn.ReLU; its gradient at 0 is 0,
-- as PyTorch's). Any shape, f32. Kernels: lunar.ops.activation(x, 'relu').
local class = require('lunar.class')
local Activation = require('lunar.nn.Activation')

local ReLU = class('ReLU', Activation)

function ReLU:__init() Activation.__init(self, 'relu') end

return ReLU
