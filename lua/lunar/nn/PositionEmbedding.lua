--- lunar.nn.PositionEmbedding: adds a learned position table, x [B, N, C] ->
-- y = x + pos_embed, pos_embed [1, N, C] broadcast over the batch (timm's
-- VisionTransformer._pos_embed: x + self.pos_embed; no PyTorch module of its
-- own). Init trunc_normal std 0.02 in [-2, 2] (timm), no weight decay. Put it
-- inline ({'', nn.PositionEmbedding(N, C)}) to get timm's name 'pos_embed'.
-- f32. dx is dy itself (the contract allows it).
-- Domain parallel (opts.domain, lua/lunar/parallel/domain.lua): x holds this
-- rank's tokens [B, n, C] of the image's N; the slice of the (whole,
-- replicated) table at the rank's token offset is added, and its gradient
-- goes to that slice.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local PositionEmbedding = class('PositionEmbedding', Module)

--- @param num_tokens integer N
-- @param dim integer C
-- @param opts optional {domain=} (a lunar.parallel.domain context)
function PositionEmbedding:__init(num_tokens, dim, opts)
  Module.__init(self)
  self.num_tokens, self.dim = num_tokens, dim
  self.domain = opts and opts.domain
  if self.domain and self.domain.total_tokens ~= num_tokens then
    error(string.format('nn.PositionEmbedding(%d, %d): the domain-parallel image has %d tokens', num_tokens, dim,
      self.domain.total_tokens), 2)
  end
  self:param('pos_embed', {1, num_tokens, dim}, {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {no_weight_decay = true})
end

function PositionEmbedding:extra_repr() return string.format('%d tokens, %d', self.num_tokens, self.dim) end

--- x [B, N, C] -> x + pos_embed (a new tensor); ctx keeps nothing.
-- The rows of a [1, N, C] table this rank's tokens use: all, or the domain rank's slice.
function PositionEmbedding:rows(t)
  local all = t:select(1, 1)
  if not self.domain then return all end
  return all:narrow(1, self.domain.token_offset + 1, self.domain.tokens)
end

function PositionEmbedding:forward(x)
  local s = x:shape()
  local n = self.domain and self.domain.tokens or self.num_tokens
  if #s ~= 3 or s[2] ~= n or s[3] ~= self.dim then
    self:shape_error(self.domain and "this domain rank's tokens" or 'tokens', s, {'B', n, self.dim})
  end
  -- a new f32 (f64) tensor, never x's storage (contiguous() may be a view; x may be bf16)
  local y = x:dtype() == 'bf16' and x:to('f32') or x:clone()
  -- the table repeated over the batch (copies doubling the filled part: log2 B
  -- of them), added in one call: the same sums as one add per image
  local B = s[1]
  if B == 0 then return y, Context() end
  local rep = lunar.empty(s, y:dtype(), y:device())
  local pos, first = self:rows(self.pos_embed), rep:select(1, 1)
  first:copy_(pos)
  first:free(); pos:free()
  local filled = 1
  while filled < B do
    local k = math.min(filled, B - filled)
    local dst, src = rep:narrow(1, filled + 1, k), rep:narrow(1, 1, k)
    dst:copy_(src)
    dst:free(); src:free()
    filled = filled + k
  end
  ops.add_(y, rep)
  rep:free()
  return y, Context()
end

--- dy -> dy itself; accumulates the sum over the batch into pos_embed's gradient.
function PositionEmbedding:backward(ctx, dy, need_dx)
  ctx:free()
  local g = self:rows(self.grad_pos_embed)
  local d = dy:is_contiguous() and dy or dy:contiguous()
  for b = 1, dy:shape()[1] do ops.add_(g, d:select(1, b)) end
  if d ~= dy then d:free() end
  if need_dx == false then return nil end
  return dy
end

return PositionEmbedding
