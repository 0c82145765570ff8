-- tests/mpi/nccl_check.lua: lunar.comm on CUDA tensors (NCCL, core/comm/comm_nccl.c)
-- against the same calls on CPU tensors (MPI), at any world size; one rank per
-- GPU (tests/mpi/test_nccl.sh runs it). Every collective, blocking and not,
-- sum/avg/max/min, and a ring of send/recv (host-staged). Every rank prints
-- "rank R: nccl_check N passed, M failed" and raises an error when any failed.
local c = lunar.comm.world()
local R, N = c:rank(), c:size()
local ok_dev, why = lunar.cuda.is_available()
if not ok_dev then error('nccl_check: no CUDA device (' .. why .. ')', 0) end
local dev = 'cuda:' .. lunar.cuda.device()

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks (tests add their own path)
local checks = require('rank_checks').new('nccl_check', c)
local check = checks.check

-- the device result equals the CPU result (tolerance for AVG's rounding)
local function same(name, d, h, tol)
  local a, b = d:cpu():totable(), h:totable()
  for i = 1, #b do
    if math.abs(a[i] - b[i]) > (tol or 0) * math.max(1, math.abs(b[i])) then
      check(name, false, string.format("[%d] = %s on %s, %s on the cpu", i, a[i], dev, b[i]))
      return
    end
  end
  check(name, true)
end

local function contrib(k, dtype)   -- (R + 1) * i
  local v = {}
  for i = 1, k do v[i] = (R + 1) * i + 0.25 * i * i end
  return lunar.tensor(v, nil, dtype or 'f32')
end

for _, op in ipairs({'sum', 'avg', 'max', 'min'}) do
  local h, d = contrib(1000), contrib(1000):to(dev)
  c:all_reduce(h, op); c:all_reduce(d, op)
  same('all_reduce ' .. op, d, h, op == 'avg' and 1e-6 or 0)
end
local hi, di = contrib(7, 'i32'), contrib(7, 'i32'):to(dev)
c:all_reduce(hi, 'sum'); c:all_reduce(di, 'sum')
same('all_reduce i32', di, hi)

local k = 5
local hout, dout = lunar.zeros({N * k}), lunar.zeros({N * k}):to(dev)
c:all_gather(hout, contrib(k)); c:all_gather(dout, contrib(k):to(dev))
same('all_gather', dout, hout)
local flat = lunar.zeros({N * k}):to(dev)   -- in place: in is block R of out
flat:narrow(1, R * k + 1, k):copy_(contrib(k))
c:all_gather(flat, flat:narrow(1, R * k + 1, k))
same('all_gather in place', flat, hout)

local hr, dr = lunar.zeros({k}), lunar.zeros({k}):to(dev)
c:reduce_scatter(hr, contrib(N * k)); c:reduce_scatter(dr, contrib(N * k):to(dev))
same('reduce_scatter', dr, hr)

local root = N - 1
local hb = R == root and contrib(9) or lunar.zeros({9})
local db = hb:to(dev)
c:broadcast(hb, root); c:broadcast(db, root)
same('broadcast', db, hb)

local a = contrib(64):to(dev)
local ra = c:iall_reduce(a, 'sum')
local ha = contrib(64)
c:all_reduce(ha, 'sum')
ra:wait()
same('iall_reduce', a, ha)

if N > 1 then
  local to, from = (R + 1) % N, (R - 1) % N
  local s, q = contrib(1 << 16):to(dev), lunar.zeros({1 << 16}):to(dev)
  local rs, rq = c:isend(s, to, 3), c:irecv(q, from, 3)
  rq:wait(); rs:wait()
  local want = lunar.zeros({1 << 16})
  local hs = contrib(1 << 16)
  if R % 2 == 0 then c:send(hs, to, 4); c:recv(want, from, 4) else c:recv(want, from, 4); c:send(hs, to, 4) end
  same('isend/irecv ring (host-staged)', q, want)
end

local ok, err = pcall(c.all_reduce, c, lunar.zeros({2}):to(dev), 'avg')
check('a collective on a device tensor returns', ok, err)
local mixed_ok, mixed_err = pcall(c.all_gather, c, lunar.zeros({N}):to(dev), lunar.zeros({1}))
check('mixed devices are refused', not mixed_ok and tostring(mixed_err):find('one CUDA device', 1, true), mixed_err)

checks.finish()
