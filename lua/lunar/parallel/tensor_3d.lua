--- lunar.parallel.tensor_3d: 3D tensor parallelism (Bian et al. 2021,
-- "Maximizing Parallelism in Distributed Training for Huge Neural Networks",
-- arXiv 2105.14450; Agarwal et al.'s 3D matrix multiplication), as
-- Colossal-AI's `parallel = {tensor = {mode = '3d', size = q*q*q}}` asks for
-- it: the layer factory lunar.nn's modules take as opts.tp. It is
-- lunar.parallel.tensor_2d's factory with the 3D grid and linears
-- (Linear3D); the norms, the patch embedding, the class token and position
-- embedding and the head are tensor_2d's modules on the 3D groups.
--
-- Tensor rank r = i*q*q + j*q + l is cube coordinate (i, j, l). Groups
-- (each split from the tensor group, ranks in the order of the varying
-- coordinates):
--   G_i, G_j, G_l   the q ranks along one axis (the others fixed)
--   G_ij            the q*q ranks with the same l (order i*q + j)
--   G_il            the q*q ranks with the same j (order i*q + l)
-- Activations [B, N, C] are split over all three axes, 1/q^3 each: the
-- residual stream (the blocks' inputs and outputs, the norms) holds batch
-- block i*q + j of q*q and feature block l of q; a column_linear's output
-- (qkv, fc1: what attention and GELU read) holds batch block i*q + l and
-- feature block j, and row_linear brings it back. Heads are split like the
-- features (H/q), the tokens are whole.
--   row group  G_l   the residual's feature blocks: LayerNorm statistics,
--                    the head's partial logits
--   col group  G_ij  the residual's vector pieces (norms, cls_token,
--                    pos_embed, patch_embed, head weight: 1/q^3 each) and
--                    the batch blocks of the logits
-- Parameters: a linear's weight [out, in] is split in q^3 pieces (rows:
-- block of q then piece i of q; columns: block of q), gathered over G_i for
-- the GEMM; biases of column_linear in 1/q^3 pieces over G_il, of
-- row_linear over G_ij; head.bias replicated.
local tensor_2d = require('lunar.parallel.tensor_2d')

local tensor_3d = {}

local T2 = tensor_2d.Factory
local T3 = setmetatable({}, {__index = T2.__index})   -- tensor_2d's methods, then lunar.nn.layers
T3.__index = T3

local function icbrt(n)
  local r = math.floor(n ^ (1 / 3) + 0.5)
  for c = math.max(r - 1, 1), r + 1 do if c * c * c == n then return c end end
  return nil
end

--- q for a size, or nil and a message naming the key and the number.
function tensor_3d.dims(size)
  local q = icbrt(size)
  if not q then
    return nil, string.format("tensor mode '3d' needs parallel.tensor.size = q x q x q (8, 27, 64, ...), got %d " ..
      '(not a perfect cube)', size)
  end
  return q
end

--- Checks a config against a 3D layout, with no communication: nil, or the
-- message (no "parallel: " prefix).
function tensor_3d.check(size, cfg)
  local q, msg = tensor_3d.dims(size)
  if not q then return msg end
  if q == 1 then return nil end
  local what = string.format("tensor mode '3d' (q = %d)", q)
  return tensor_2d.check_split(what, cfg, q, q * q * q, 'q x q x q', q * q, 'q x q')
end

--- Splits the grid's tensor group into G_i, G_j, G_l, G_ij, G_il (collective
-- over g.tp_group) and stores g.tensor_groups = {q=, d=1, i=, j=, l=, k=0,
-- row=G_l, col=G_ij, batch=G_ij, gi=, gj=, gl=, gij=, gil=}.
function tensor_3d.make_groups(g)
  local q = tensor_3d.dims(g.tp_size)
  local r = g.tp_rank
  local i, j, l = r // (q * q), (r // q) % q, r % q
  local tp = g.tp_group
  local name = tp:name()
  local t = {q = q, d = 1, k = 0, i = i, j = j, l = l}
  t.gi = tp:split(j * q + l, i, name .. '/i')
  t.gj = tp:split(i * q + l, j, name .. '/j')
  t.gl = tp:split(i * q + j, l, name .. '/l')
  t.gij = tp:split(l, i * q + j, name .. '/ij')
  t.gil = tp:split(j, i * q + l, name .. '/il')
  t.row, t.col, t.batch = t.gl, t.gij, t.gij
  g.tensor_groups = t
  return t
end

--- @param args {q=, rank= (tensor rank), groups= (make_groups' result; forward
--   and backward only)}
function tensor_3d.new(args)
  local q, r = assert(args.q, 'tensor_3d.new: q is required'), assert(args.rank, 'tensor_3d.new: rank is required')
  local t = setmetatable({size = q * q * q, rank = r, q = q, d = 1, k = 0, i = r // (q * q), j = (r // q) % q,
    l = r % q, groups = args.groups, mode = '3d', sequence_parallel = false}, T3)
  t.fblock, t.piece, t.npieces = t.l, t.i * q + t.j, q * q
  t.bblock, t.nbatch = t.i * q + t.j, q * q          -- the residual's batch block, of nbatch
  return t
end

--- The residual's vector layout: block l, piece i*q + j of q*q over G_ij.
function T3:vector_layout()
  return {group = 'col', block = self.l, piece = self.piece, npieces = self.npieces, label = 'q x q x q'}
end

--- A Linear3D from the residual layout (features on l) to the inner one
-- (features on j): qkv, fc1.
function T3:column_linear(in_features, out_features, opts)
  local o = require('lunar.parallel.tensor_1d').with_tp(self, opts)
  o.direction = 'column'
  return require('lunar.parallel.Linear3D')(in_features, out_features, o)
end

--- A Linear3D from the inner layout back to the residual one: proj, fc2.
function T3:row_linear(in_features, out_features, opts)
  local o = require('lunar.parallel.tensor_1d').with_tp(self, opts)
  o.direction = 'row'
  return require('lunar.parallel.Linear3D')(in_features, out_features, o)
end

--- Where the activation block of tensor rank `rank` sits (see
-- tensor_2d's): residual (i*q + j, q*q, l, q); inner (i*q + l, q*q, j, q).
function T3:activation_block(inner, rank)
  rank = rank or self.rank
  local q = self.q
  local i, j, l = rank // (q * q), (rank // q) % q, rank % q
  if inner then return i * q + l, q * q, j, q end
  return i * q + j, q * q, l, q
end

return tensor_3d
