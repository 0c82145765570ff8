--- lunar.nn.layers: the layer factory of a model that is not split across
-- ranks. Attention, MLP, Block and ViT build every layer a tensor-parallel
-- mode may split through a factory, their opts.tp, and use this one when
-- opts.tp is nil; a mode under lunar.parallel (lunar.parallel.tensor_1d,
-- what lunar.parallel.tp_context returns) is a factory with the same
-- fields, so lunar.nn never names a parallel mode nor requires lunar.parallel.
--
--   tp.size, tp.rank               the tensor-parallel group (1, 0 here)
--   tp.sequence_parallel           whether norms, dropouts and residuals run on
--                                  1/size of the tokens (false here)
--   tp:column_linear(in, out, opts)   [..., in] -> [..., out/size] (this rank's
--                                  outputs; opts.groups: out is that many equal
--                                  groups, each split); Linear opts
--   tp:row_linear(in, out, opts)   [..., in/size] -> [..., out], summed over
--                                  the group (token slices with sequence_parallel)
--   tp:dropout(p, seed, whole)     a Dropout on this rank's activations (its own part of
--                                  the stream with sequence_parallel unless `whole`: it
--                                  runs before the tokens are scattered)
--   tp:scatter_tokens()            a module [B, N, C] -> this rank's tokens
--                                  [B, N/size, C], or nil when not sequence parallel
--   tp:gather_tokens()             a module [B, N/size, C] -> [B, N, C] whose
--                                  consumer is replicated, or nil likewise
-- and, for the modes that also split the activations (lunar.parallel.tensor_2d):
--   tp:layer_norm(dim, eps, opts)  a LayerNorm (opts.sequence_parallel)
--   tp:patch_embed(opts)           a PatchEmbed: images [B, ...] -> tokens [B', L, C']
--   tp:head(dim, classes)          the head: class tokens [B', C'] -> logits [B, classes]
--   tp:token_params(owner, N, dim, cls_init, pos_init)   declares owner's cls_token
--                                  [1, 1, dim] and pos_embed [1, N, dim]
--   tp:embed_tokens(owner, p)      patch tokens [B', L, C'] -> [B', L+1, C'] (class
--                                  token, position embedding); tp:embed_tokens_backward(owner, dt)
--   tp:local_heads(H), tp:local_features(C), tp:local_batch(B)   what one rank holds
--                                  of the heads, an activation's features, a micro-batch
--   tp:num_batch_blocks()          the batch is split in that many blocks (1 here)
-- (B', C': this rank's batch and features, B and C here).
local Linear = require('lunar.nn.Linear')
local LayerNorm = require('lunar.nn.LayerNorm')
local PatchEmbed = require('lunar.nn.PatchEmbed')

local layers = {size = 1, rank = 0, sequence_parallel = false}

--- A Linear (groups has no meaning without a split and is ignored).
function layers:column_linear(in_features, out_features, opts)
  return Linear(in_features, out_features, opts)
end

--- A Linear.
function layers:row_linear(in_features, out_features, opts)
  return Linear(in_features, out_features, opts)
end

--- A Dropout (p, seed as nn.Dropout's) for this rank's activations: with
-- sequence parallelism (1/size of the tokens) at its own part of the stream,
-- unless `whole` (the dropout sees every token: before the scatter).
function layers:dropout(p, seed, whole)
  local d = require('lunar.nn.Dropout')(p, seed)
  if self.sequence_parallel and not whole then d.rank_offset = self.rank end
  return d
end

--- nil: the tokens are never split.
function layers:scatter_tokens() return nil end

--- nil: the tokens are never split.
function layers:gather_tokens() return nil end

--- A LayerNorm (nn.LayerNorm's opts).
function layers:layer_norm(dim, eps, opts) return LayerNorm(dim, eps, opts) end

--- A PatchEmbed (nn.PatchEmbed's opts).
function layers:patch_embed(opts) return PatchEmbed(opts) end

--- The head: a Linear.
function layers:head(dim, num_classes) return Linear(dim, num_classes) end

--- Declares cls_token [1, 1, dim] and pos_embed [1, N, dim] on owner (no weight decay).
function layers:token_params(owner, num_tokens, dim, cls_init, pos_init)
  owner:param('cls_token', {1, 1, dim}, cls_init, {no_weight_decay = true})
  owner:param('pos_embed', {1, num_tokens, dim}, pos_init, {no_weight_decay = true})
end

--- ops.embed_tokens with owner's class token and position embedding.
function layers:embed_tokens(owner, p) return lunar.ops.embed_tokens(p, owner.cls_token, owner.pos_embed) end

--- ops.embed_tokens_backward into owner's gradients; returns the patch tokens' gradient.
function layers:embed_tokens_backward(owner, dt)
  return lunar.ops.embed_tokens_backward(dt, owner.grad_cls_token, owner.grad_pos_embed)
end

--- Heads per rank: H / size (an error naming both when it does not divide).
function layers:local_heads(num_heads)
  if num_heads % self.size ~= 0 then
    error(string.format('attention: NUM_HEADS %d is not divisible by the tensor parallel size %d', num_heads,
      self.size), 0)
  end
  return num_heads // self.size
end

--- An activation's features on one rank: all of them.
function layers:local_features(dim) return dim end

--- A micro-batch's images on one rank: all of them.
function layers:local_batch(batch) return batch end

--- The number of blocks the batch is split in (its size must be a multiple): 1.
function layers:num_batch_blocks() return 1 end

return layers
