--- lunar.nn.CrossEntropy: mean softmax cross-entropy over a batch with label
-- smoothing eps (Szegedy et al. 2016; PyTorch's CrossEntropyLoss with
-- label_smoothing): target q = (1 - eps) onehot + eps / K.
--
-- A Module with the common contract (lunar.nn.Module); as a loss its forward
-- takes the target as its second argument (torch/nn's Criterion) and its
-- output is a number:
--   local loss, ctx = crit:forward(logits, target)   logits [B, K] f32, target [B] i32
--   local dlogits = crit:backward(ctx, dloss)         dloss: d(objective)/d(loss), default 1
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local CrossEntropy = class('CrossEntropy', Module)

--- @param opts {label_smoothing = 0}
function CrossEntropy:__init(opts)
  Module.__init(self)
  self.label_smoothing = (opts and opts.label_smoothing) or 0
end

function CrossEntropy:extra_repr() return string.format('label_smoothing=%g', self.label_smoothing) end

--- logits [B, K] f32, target [B] i32 -> loss (a Lua number), ctx (refers to
-- logits and target, owns nothing: the caller keeps both until backward).
function CrossEntropy:forward(logits, target)
  local loss = ops.cross_entropy(logits, target, self.label_smoothing)
  return loss, Context(nil, {logits = logits, target = target})
end

--- dloss: the gradient of the loss (a number, default 1) -> dlogits [B, K]
-- f32, (softmax(logits) - q) * dloss / B (nil when need_dx is false).
function CrossEntropy:backward(ctx, dloss, need_dx)
  local dlogits
  if need_dx ~= false then
    dlogits = ops.cross_entropy_backward(ctx.logits, ctx.target, self.label_smoothing, dloss or 1)
  end
  ctx:free()
  return dlogits
end

return CrossEntropy
