--- lunar.nn.CrossEntropy: mean softmax cross-entropy over a batch with label
-- smoothing eps (Szegedy et al. 2016; PyTorch's CrossEntropyLoss with
-- label_smoothing): target q = (1 - eps) onehot + eps / K.
local class = require('lunar.class')
local ops = lunar.ops

local CrossEntropy = class('CrossEntropy')

function CrossEntropy:__init(opts)
  self.label_smoothing = (opts and opts.label_smoothing) or 0
end

--- logits [B, K] f32, targets [B] i32 -> loss (a Lua number), ctx.
function CrossEntropy:forward(logits, targets)
  local loss = ops.cross_entropy(logits, targets, self.label_smoothing)
  return loss, {logits = logits, targets = targets}
end

--- dloss: gradient of the loss (default 1) -> dlogits [B, K].
function CrossEntropy:backward(ctx, dloss)
  return ops.cross_entropy_backward(ctx.logits, ctx.targets, self.label_smoothing, dloss or 1)
end

return CrossEntropy
