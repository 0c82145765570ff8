-- tests/mpi/mappings_check.lua: each tensor/sequence-parallel mapping
-- (lunar.parallel.mappings) on rank-dependent inputs, Megatron style: every
-- value says which rank, sample, token and channel it came from, so a result
-- names who contributed what. The whole world is one tensor-parallel group.
-- Also ColumnParallelLinear / RowParallelLinear against nn.Linear on the same
-- full weights (forward, input gradient, gathered weight gradients), with
-- and without sequence parallelism.
--   mpirun -np T build/lunar tests/mpi/mappings_check.lua   (T divides 4 tokens)
-- Every rank prints "rank R: mappings_check N passed, M failed"; an error is
-- raised at the end when any rank failed.
local nn = require('lunar.nn')
local mappings = require('lunar.parallel.mappings')
local ColumnParallelLinear = require('lunar.parallel.ColumnParallelLinear')
local RowParallelLinear = require('lunar.parallel.RowParallelLinear')
local parallel = require('lunar.parallel')

local world = lunar.comm.world()
local R, T = world:rank(), world:size()
local tp = {comm = world, size = T, rank = R, sequence_parallel = false}
package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks (tests add their own path)
local checks = require('rank_checks').new('mappings_check', world)
local check = checks.check

local B, N, C = 2, 4, 3
local n = N // T
local S = T * (T + 1) / 2

-- t[b][tok][c] == f(b, tok, c) (0-based indices)
local function all_eq(t, f, tol)
  local s = t:shape()
  local v = t:contiguous():view(-1):totable()
  local i = 0
  for b = 0, s[1] - 1 do for k = 0, s[2] - 1 do for c = 0, s[3] - 1 do
    i = i + 1
    local want = f(b, k, c)
    if math.abs(v[i] - want) > (tol or 0) then
      return false, string.format('[%d, %d, %d] = %s, want %s', b, k, c, v[i], want)
    end
  end end end
  return true
end
local function fill(shape, f)
  local vals = {}
  for b = 0, shape[1] - 1 do for k = 0, shape[2] - 1 do for c = 0, shape[3] - 1 do
    vals[#vals + 1] = f(b, k, c)
  end end end
  return lunar.tensor(vals, shape)
end
local tag = function(r, b, k, c) return 1000 * r + 100 * b + 10 * k + c end

-- CopyToTP / ReduceFromTP
do
  local m = mappings.CopyToTP(tp)
  local x = fill({B, N, C}, function(b, k, c) return tag(0, b, k, c) end)
  local y, cy = m:forward(x)
  check('CopyToTP forward is the identity', y == x)
  local dy = fill({B, N, C}, function(b, k, c) return (R + 1) * tag(0, b, k, c) end)
  check('CopyToTP backward sums over ranks', all_eq(m:backward(cy, dy), function(b, k, c) return S * tag(0, b, k, c) end))
  check('CopyToTP backward released its context', cy.freed == true)
  local r = mappings.ReduceFromTP(tp)
  local p = fill({B, N, C}, function(b, k, c) return (R + 1) * tag(0, b, k, c) end)
  local rp, cr = r:forward(p)
  check('ReduceFromTP forward sums over ranks', all_eq(rp, function(b, k, c) return S * tag(0, b, k, c) end))
  local d = fill({B, N, C}, function() return 1 end)
  check('ReduceFromTP backward is the identity', r:backward(cr, d) == d)
  check('the mappings are Modules', getmetatable(m).__parent == nn.Module and getmetatable(r).__parent == nn.Module)
  local _, cn = r:forward(fill({B, N, C}, function() return 1 end))
  check('need_dx = false: no input gradient', r:backward(cn, d, false) == nil)
end

-- sequence parallel: tokens r*n .. (r+1)*n-1 on rank r
do
  local g = mappings.GatherFromSP(tp)
  local slice = fill({B, n, C}, function(b, k, c) return tag(R, b, k, c) end)
  local full, cg = g:forward(slice)
  check('GatherFromSP forward: [B, N, C]', table.concat(full:shape(), ',') == table.concat({B, N, C}, ','))
  check('GatherFromSP forward: rank r\'s tokens at r*n..', all_eq(full, function(b, k, c)
    return tag(k // n, b, k % n, c) end))
  local dfull = fill({B, N, C}, function(b, k, c) return (R + 1) * tag(0, b, k, c) end)
  check('GatherFromSP backward: reduce_scatter of this rank\'s tokens', all_eq(g:backward(cg, dfull),
    function(b, k, c) return S * tag(0, b, R * n + k, c) end))
  local gs = mappings.GatherFromSP(tp, {grad = 'split'})
  check('GatherFromSP(split) backward: this rank\'s slice', all_eq(gs:backward(select(2, gs:forward(slice)), dfull),
    function(b, k, c) return (R + 1) * tag(0, b, R * n + k, c) end))
  local sc = mappings.ScatterToSP(tp)
  local whole = fill({B, N, C}, function(b, k, c) return tag(0, b, k, c) end)
  local part, csc = sc:forward(whole)
  check('ScatterToSP forward: this rank\'s slice', all_eq(part, function(b, k, c)
    return tag(0, b, R * n + k, c) end))
  check('ScatterToSP backward: all_gather', all_eq(sc:backward(csc, slice), function(b, k, c)
    return tag(k // n, b, k % n, c) end))
  local rs = mappings.ReduceScatterToSP(tp)
  local partial = fill({B, N, C}, function(b, k, c) return (R + 1) * tag(0, b, k, c) end)
  local summed, crs = rs:forward(partial)
  check('ReduceScatterToSP forward: summed slice', all_eq(summed, function(b, k, c)
    return S * tag(0, b, R * n + k, c) end))
  check('ReduceScatterToSP backward: all_gather', all_eq(rs:backward(crs, slice), function(b, k, c)
    return tag(k // n, b, k % n, c) end))
end

-- Column/Row parallel linear against nn.Linear (same full weights, from the same seed and names)
local function linear_pair(sp)
  local label = sp and ' (sequence parallel)' or ''
  local tpc = {comm = world, size = T, rank = R, sequence_parallel = sp}
  local K, H = 4, 4 * T
  local function model(cls_col, cls_row)
    local m = nn.Module()
    if cls_col then
      m:add('fc1', cls_col(K, 3 * H, {tp = tpc}))
      m:add('fc2', cls_row(H * 3, K, {tp = tpc}))
    else
      m:add('fc1', nn.Linear(K, 3 * H))
      m:add('fc2', nn.Linear(3 * H, K))
    end
    return nn.materialize(m, 3)
  end
  local ref, par = model(), model(ColumnParallelLinear, RowParallelLinear)
  -- non-zero biases
  for _, mm in ipairs({ref, par}) do
    for _, p in ipairs(mm:parameters()) do
      if p.name:match('bias$') then
        local full = lunar.empty(p.shard and p.shard.full_shape or p.shape):uniform_(5, p.name, -1, 1)
        if p.shard then
          for _, pc in ipairs(nn.shard_pieces(p.shard)) do
            p.param:narrow(1, pc.local_offset + 1, pc.len):copy_(full:narrow(1, pc.full_offset + 1, pc.len))
          end
        else p.param:copy_(full) end
      end
    end
  end
  local x = fill({B, N, K}, function(b, k, c) return math.sin(1 + b + 2 * k + 3 * c) end)
  local dy = fill({B, N, K}, function(b, k, c) return math.cos(1 + b + k + c) end)
  local h, c1 = ref.fc1:forward(x)
  local y, c2 = ref.fc2:forward(h)
  local dh = ref.fc2:backward(c2, dy)
  local dx = ref.fc1:backward(c1, dh)
  local xin = sp and mappings.split_tokens(tpc, x) or x
  local dyin = sp and mappings.split_tokens(tpc, dy) or dy
  local ph, pc1 = par.fc1:forward(xin)
  local py, pc2 = par.fc2:forward(ph)
  local pdh = par.fc2:backward(pc2, dyin)
  local pdx = par.fc1:backward(pc1, pdh)
  local want_y = sp and mappings.split_tokens(tpc, y) or y
  local want_dx = sp and mappings.split_tokens(tpc, dx) or dx
  local yv, wv = py:view(-1):totable(), want_y:view(-1):totable()
  local ok = #yv == #wv
  for i = 1, #wv do ok = ok and math.abs(yv[i] - wv[i]) <= 1e-5 * (1 + math.abs(wv[i])) end
  check('Column -> Row forward equals Linear -> Linear' .. label, ok)
  local dv, dw = pdx:view(-1):totable(), want_dx:view(-1):totable()
  ok = #dv == #dw
  for i = 1, #dw do ok = ok and math.abs(dv[i] - dw[i]) <= 1e-5 * (1 + math.abs(dw[i])) end
  check('input gradient equals Linear\'s' .. label, ok)
  -- gathered gradients (sequence parallel: the Row bias gradient is partial: sum it)
  for _, p in ipairs(par:parameters()) do
    if p.sequence_parallel then world:all_reduce(p.grad, 'sum') end
  end
  local grads = {}
  for _, p in ipairs(par:parameters()) do
    grads[p.name] = parallel.gather_full_tensor({param = p.grad, shard = p.shard, shape = p.shape}, {tp_group = world})
  end
  for _, p in ipairs(ref:parameters()) do
    local a, b = grads[p.name]:view(-1):totable(), p.grad:view(-1):totable()
    ok = #a == #b
    for i = 1, #b do ok = ok and math.abs(a[i] - b[i]) <= 1e-5 * (1 + math.abs(b[i])) end
    check('gradient of ' .. p.name .. ' gathered equals Linear\'s' .. label, ok)
  end
end
linear_pair(false)
if N % T == 0 then linear_pair(true) end

-- ColumnParallelLinear with groups = 3 (qkv split by heads): this rank's
-- outputs are the q, k and v columns of its heads
do
  local K, H = 4, 2 * T
  local ref = nn.materialize(nn.Linear(K, 3 * H), 11)
  local par = nn.materialize(ColumnParallelLinear(K, 3 * H, {tp = tp, groups = 3}), 11)
  local x = fill({B, N, K}, function(b, k, c) return math.sin(b + k + 2 * c) end)
  local y = ref:forward(x)
  local py = par:forward(x)
  local ok = true
  for g = 0, 2 do
    local want = y:narrow(3, g * H + R * (H // T) + 1, H // T):contiguous():view(-1):totable()
    local got = py:narrow(3, g * (H // T) + 1, H // T):contiguous():view(-1):totable()
    for i = 1, #want do ok = ok and math.abs(got[i] - want[i]) <= 1e-6 * (1 + math.abs(want[i])) end
  end
  check('ColumnParallelLinear groups=3: q, k, v columns of this rank\'s heads', ok)
end

checks.finish()
