--- lunar.parallel.mappings: the tensor-parallel communication as modules whose
-- forward and backward are conjugate collectives (Megatron-LM's
-- tensor_parallel/mappings.py; Shoeybi et al. 2019, "f" and "g"; Korthikanti
-- et al. 2022 for the sequence-parallel pairs).
--
--   module               forward                         backward
--   CopyToTP             identity                        all_reduce (sum)
--   ReduceFromTP         all_reduce (sum)                identity
--   ScatterToSP          keep this rank's token slice    all_gather along tokens
--   GatherFromSP         all_gather along tokens         reduce_scatter along tokens
--                                                        (or keep the slice: grad='split')
--   ReduceScatterToSP    reduce_scatter along tokens     all_gather along tokens
--
-- Each is a Module (no parameters) built on a tensor-parallel context
-- `tp = {comm=, size=T, rank=r}` (lunar.parallel.tp_context) and follows the
-- module contract (lunar.nn.Module): `y, ctx = m:forward(x)`,
-- `dx = m:backward(ctx, dy, need_dx)`; the contexts hold no tensor. Tensors are
-- [B, N, C] (tokens in dim 2); a sequence-parallel slice is [B, N/T, C], rank
-- r holding tokens r*N/T .. (r+1)*N/T-1. all_reduce works in place (the
-- forward input / backward gradient is overwritten and returned); the token
-- collectives return new tensors and leave their input alone.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')

local mappings = {}

-- ---- token collectives (dim 2 of [B, N, C]) -------------------------------------------

--- All-gathers token slices: x [B, n, C] on each of T ranks -> [B, T*n, C]
-- (rank r's slice at tokens r*n ..). MPI gathers rank-major, so the result
-- is permuted from [T, B, n, C].
local function all_gather_tokens(tp, x)
  local s = x:shape()
  local B, n, C = s[1], s[2], s[3]
  local buf = lunar.empty({tp.size, B, n, C}, x:dtype(), x:device())   -- bf16 activations too (precision = 'bf16')
  local xc = x:is_contiguous() and x or x:contiguous()
  tp.comm:all_gather(buf, xc)
  if xc ~= x then xc:free() end
  -- every intermediate view is freed now: a view holds its storage until the GC otherwise
  local perm = buf:permute(2, 1, 3, 4)
  local c = perm:contiguous()
  perm:free(); buf:free()
  local out = c:view(B, tp.size * n, C)
  c:free()
  return out
end

--- Reduce-scatters along tokens: x [B, N, C] (a partial sum on each rank) ->
-- [B, N/T, C], the sum over ranks of this rank's token slice.
local function reduce_scatter_tokens(tp, x)
  local s = x:shape()
  local B, N, C = s[1], s[2], s[3]
  local n = N // tp.size
  local v = x:view(B, tp.size, n, C)
  local perm = v:permute(2, 1, 3, 4)
  local xt = perm:contiguous()   -- [T, B, n, C]
  perm:free(); v:free()          -- the views would hold x's storage until the GC
  local out = lunar.empty({B, n, C}, x:dtype(), x:device())
  tp.comm:reduce_scatter(out, xt, 'sum')
  xt:free()
  return out
end

--- This rank's token slice of x [B, N, C] -> [B, N/T, C] (a new tensor).
function mappings.split_tokens(tp, x)
  local s = x:shape()
  local n = s[2] // tp.size
  local v = x:narrow(2, tp.rank * n + 1, n)
  local out = v:contiguous()
  v:free()                       -- the view would hold x's storage until the GC
  return out
end

local function check_tokens(who, tp, x)
  local s = x:shape()
  if #s ~= 3 then error(string.format('%s: expected [B, N, C], got [%s]', who, table.concat(s, ', ')), 3) end
  if s[2] % tp.size ~= 0 then
    error(string.format('%s: %d tokens are not divisible by the tensor parallel size %d', who, s[2], tp.size), 3)
  end
end

-- ---- tensor parallel ------------------------------------------------------------------------

-- A mapping: a Module without parameters whose forward and backward are
-- collectives over tp.comm; its contexts hold no tensor.
local function mapping(name)
  local M = class(name, Module)
  function M:__init(tp)
    Module.__init(self)
    self.tp = tp
  end
  return M
end

-- Releases a mapping's context; whether the caller wants dx (need_dx, default true).
local function wants_dx(ctx, need_dx)
  ctx:free()
  return need_dx ~= false
end

--- CopyToTP: enters a tensor-parallel region with a replicated input.
-- forward: identity (y is x); backward: all_reduce (sum) of the input
-- gradient over the tensor-parallel group, in place on dy (each rank's
-- gradient is a partial sum), returned.
mappings.CopyToTP = mapping('CopyToTP')
function mappings.CopyToTP:forward(x) return x, Context() end
function mappings.CopyToTP:backward(ctx, dy, need_dx)
  if wants_dx(ctx, need_dx) then return self.tp.comm:all_reduce(dy, 'sum') end
end

--- ReduceFromTP: leaves a tensor-parallel region: forward all_reduce (sum) of
-- the partial outputs, in place on x (y is x); backward: identity (dx is dy).
mappings.ReduceFromTP = mapping('ReduceFromTP')
function mappings.ReduceFromTP:forward(x) return self.tp.comm:all_reduce(x, 'sum'), Context() end
function mappings.ReduceFromTP:backward(ctx, dy, need_dx)
  if wants_dx(ctx, need_dx) then return dy end
end

-- ---- sequence parallel --------------------------------------------------------------------

--- ScatterToSP: enters the sequence-parallel region from a replicated
-- [B, N, C]: forward keeps this rank's tokens [B, N/T, C] (a new tensor);
-- backward all-gathers the slice gradients back to [B, N, C].
mappings.ScatterToSP = mapping('ScatterToSP')
function mappings.ScatterToSP:forward(x)
  check_tokens('ScatterToSP', self.tp, x)
  return mappings.split_tokens(self.tp, x), Context()
end
function mappings.ScatterToSP:backward(ctx, dy, need_dx)
  if wants_dx(ctx, need_dx) then return all_gather_tokens(self.tp, dy) end
end

--- GatherFromSP: forward all-gathers token slices [B, N/T, C] -> [B, N, C].
-- backward: opts.grad = 'reduce_scatter' (default: the consumer is tensor
-- parallel, e.g. a ColumnParallelLinear, so each rank's gradient is a
-- partial sum) or 'split' (the consumer is replicated, e.g. the final norm
-- and head, so every rank holds the whole gradient and keeps its slice).
mappings.GatherFromSP = class('GatherFromSP', Module)
function mappings.GatherFromSP:__init(tp, opts)
  Module.__init(self)
  self.tp = tp
  self.grad = opts and opts.grad or 'reduce_scatter'
  assert(self.grad == 'reduce_scatter' or self.grad == 'split', 'GatherFromSP: grad is reduce_scatter or split')
end
function mappings.GatherFromSP:forward(x) return all_gather_tokens(self.tp, x), Context() end
function mappings.GatherFromSP:backward(ctx, dy, need_dx)
  check_tokens('GatherFromSP', self.tp, dy)
  if not wants_dx(ctx, need_dx) then return nil end
  if self.grad == 'split' then return mappings.split_tokens(self.tp, dy) end
  return reduce_scatter_tokens(self.tp, dy)
end

--- ReduceScatterToSP: leaves a tensor-parallel region into the sequence-
-- parallel one: forward reduce-scatters partial [B, N, C] -> summed
-- [B, N/T, C]; backward all-gathers the slice gradients to [B, N, C].
mappings.ReduceScatterToSP = mapping('ReduceScatterToSP')
function mappings.ReduceScatterToSP:forward(x)
  check_tokens('ReduceScatterToSP', self.tp, x)
  return reduce_scatter_tokens(self.tp, x), Context()
end
function mappings.ReduceScatterToSP:backward(ctx, dy, need_dx)
  if wants_dx(ctx, need_dx) then return all_gather_tokens(self.tp, dy) end
end

return mappings
