-- tests/mpi/comm_check.lua: lunar.comm from Lua, at any world size
-- (tests/mpi/test_comm.sh runs it with mpirun -np 4, and alone).
--
-- Rank-dependent values, Megatron style: rank r contributes r + 1 (times the
-- element index), so every result names who contributed what. Checks every
-- collective on the world and on split groups (color = rank % 2, and a
-- reversed key), blocking and non-blocking, sum/avg/max/min, all_gather's
-- rank order, reduce_scatter's blocks, broadcast from root 2, a ring of
-- send/recv and of isend/irecv, bf16 all_gather, requests that outlive their
-- tensors' references, the argument errors (pcall) whose messages must
-- name the op, and the traffic counters (lunar.comm.stats) by hand arithmetic. Every rank prints "rank R: comm_check N passed, M failed";
-- the script raises an error (the host then aborts the job) when any rank
-- failed. Checks never skip a collective, so a failure cannot hang the job.
local c = lunar.comm.world()
local R, N = c:rank(), c:size()

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks (tests add their own path)
local checks = require('rank_checks').new('comm_check', c)
local check = checks.check

local function close(a, b, tol) return math.abs(a - b) <= (tol or 0) * math.max(1, math.abs(b)) end

-- values of t (1-based Lua table) equal f(i) for i = 0 .. #t-1
local function all_eq(t, f, tol)
  local v = t:totable()
  for i = 1, #v do
    if not close(v[i], f(i - 1), tol) then return false, string.format("[%d] = %s, want %s", i, v[i], f(i - 1)) end
  end
  return true
end

local function expect_error(name, needles, fn, ...)
  local ok, err = pcall(fn, ...)
  err = tostring(err)
  local good = not ok
  for _, s in ipairs(needles) do good = good and err:find(s, 1, true) ~= nil end
  check(name, good, ok and "no error" or err)
end

local S = N * (N + 1) / 2          -- sum over ranks of (r + 1)

-- ---- the world -------------------------------------------------------------------
check("world rank/size = lunar.rank/world_size", R == lunar.rank and N == lunar.world_size,
      string.format("%d/%d vs %s/%s", R, N, lunar.rank, lunar.world_size))
check("world() returns the same object", lunar.comm.world() == c)
check("tostring(world)", tostring(c) == string.format("comm(world, rank %d of %d)", R, N), tostring(c))
check("world name", c:name() == "world")

-- ---- all_reduce ----------------------------------------------------------------------
local function contrib(k, dtype) -- (R + 1) * (i + 1), i = 0 .. k-1
  local v = {}
  for i = 1, k do v[i] = (R + 1) * i end
  return lunar.tensor(v, dtype)
end
local t = contrib(6)
check("all_reduce returns t", c:all_reduce(t) == t)
check("all_reduce sum", all_eq(t, function(i) return S * (i + 1) end, 1e-6))
t = contrib(6); c:all_reduce(t, 'avg')
check("all_reduce avg", all_eq(t, function(i) return S / N * (i + 1) end, 1e-6))
t = contrib(6); c:all_reduce(t, 'max')
check("all_reduce max", all_eq(t, function(i) return N * (i + 1) end))
t = contrib(6); c:all_reduce(t, 'min')
check("all_reduce min", all_eq(t, function(i) return i + 1 end))
t = contrib(3, 'f64'); c:all_reduce(t, 'avg')
check("all_reduce avg f64", all_eq(t, function(i) return S / N * (i + 1) end, 1e-15))
t = contrib(3, 'i32'); c:all_reduce(t, 'sum')
check("all_reduce sum i32", t:dtype() == 'i32' and all_eq(t, function(i) return S * (i + 1) end))
t = contrib(3, 'i64'); c:all_reduce(t, 'max')
check("all_reduce max i64", all_eq(t, function(i) return N * (i + 1) end))

-- ---- all_reduce_number ---------------------------------------------------------------
local arn = lunar.comm.all_reduce_number
check("all_reduce_number sum (integer stays integer)", math.type(arn(c, R + 1)) == 'integer' and arn(c, R + 1) == S)
check("all_reduce_number avg", close(arn(c, R + 1, 'avg'), S / N, 1e-15))
check("all_reduce_number max", arn(c, (R + 1) * 0.5, 'max') == N * 0.5)
check("all_reduce_number min", arn(c, -(R + 1), 'min') == -N)
check("c:all_reduce_number", close(c:all_reduce_number(0.25 * R, 'sum'), 0.25 * (S - N), 1e-15))

-- ---- all_gather: block r from rank r ----------------------------------------------------
local k = 3
local out = lunar.zeros({N * k})
check("all_gather returns out", c:all_gather(out, lunar.tensor({10 * R, 10 * R + 1, 10 * R + 2})) == out)
check("all_gather rank order", all_eq(out, function(i) return 10 * (i // k) + i % k end))
local b16 = lunar.full({2}, R + 0.5, 'bf16')
local bout = lunar.zeros({N, 2}, 'bf16')
c:all_gather(bout, b16)
check("all_gather bf16", bout:dtype() == 'bf16' and all_eq(bout:view(2 * N), function(i) return i // 2 + 0.5 end))
-- in place: in is this rank's block of out (a ZeRO shard of a flat buffer)
local flat = lunar.full({N * k}, -1)
flat:narrow(1, R * k + 1, k):fill_(R + 7)
c:all_gather(flat, flat:narrow(1, R * k + 1, k))
check("all_gather in place (own block)", all_eq(flat, function(i) return i // k + 7 end))

-- ---- reduce_scatter: out on rank r = block r of the sum -------------------------------------
local rin = contrib(N * k)
local rout = lunar.zeros({k})
check("reduce_scatter returns out", c:reduce_scatter(rout, rin) == rout)
check("reduce_scatter blocks", all_eq(rout, function(i) return S * (R * k + i + 1) end, 1e-6))
c:reduce_scatter(rout, contrib(N * k), 'avg')
check("reduce_scatter avg", all_eq(rout, function(i) return S / N * (R * k + i + 1) end, 1e-6))
c:reduce_scatter(rout, contrib(N * k), 'max')
check("reduce_scatter max", all_eq(rout, function(i) return N * (R * k + i + 1) end))

-- ---- broadcast from root 2 (the last rank on smaller worlds) -------------------------------------
local root = math.min(2, N - 1)
local bt = R == root and lunar.tensor({42, 43, 44}) or lunar.zeros({3})
check("broadcast returns t", c:broadcast(bt, root) == bt)
check("broadcast from root " .. root, all_eq(bt, function(i) return 42 + i end))
local bi = lunar.full({2}, R == root and 5 or 0, 'u8')
c:broadcast(bi, root)
check("broadcast u8", all_eq(bi, function() return 5 end))

-- ---- point to point: rings ------------------------------------------------------------------
if N > 1 then
  local to, from = (R + 1) % N, (R - 1) % N
  local s, q = lunar.tensor({R, R * 10}), lunar.zeros({2})
  if R % 2 == 0 then c:send(s, to); c:recv(q, from) else c:recv(q, from); c:send(s, to) end
  check("send/recv ring", all_eq(q, function(i) return from * (i == 0 and 1 or 10) end))
  -- every rank posts both at once: no deadlock whatever the order
  local big_s = lunar.full({1 << 18}, R + 1)       -- 1 MiB: not an eager message
  local big_q = lunar.zeros({1 << 18})
  local rs = c:isend(big_s, to, 5)
  local rr = c:irecv(big_q, from, 5)
  check("irecv wait returns the tensor", rr:wait() == big_q)
  check("isend wait returns nothing", select('#', rs:wait()) == 0)
  check("isend/irecv ring", big_q:min() == from + 1 and big_q:max() == from + 1)
  -- tags keep concurrent messages apart
  local qa, qb = lunar.zeros({1}), lunar.zeros({1})
  local r1, r2 = c:irecv(qa, from, 1), c:irecv(qb, from, 2)
  local s2, s1 = c:isend(lunar.tensor({200 + R}), to, 2), c:isend(lunar.tensor({100 + R}), to, 1)
  r1:wait(); r2:wait(); s1:wait(); s2:wait()
  check("tags match messages", qa[1] == 100 + from and qb[1] == 200 + from)
end

-- ---- non-blocking collectives ------------------------------------------------------------------
local a = contrib(5)
local ra = c:iall_reduce(a, 'avg')
check("request tostring", tostring(ra):find("comm_request(iall_reduce", 1, true) ~= nil, tostring(ra))
local spins = 0
while not ra:test() and spins < 1e7 do spins = spins + 1 end
check("iall_reduce test() becomes true", ra:test())
check("iall_reduce wait returns t", ra:wait() == a)
check("iall_reduce avg", all_eq(a, function(i) return S / N * (i + 1) end, 1e-6))
check("second wait is a no-op", ra:wait() == a and all_eq(a, function(i) return S / N * (i + 1) end, 1e-6))
local g = lunar.zeros({N * 2})
local rg = c:iall_gather(g, lunar.tensor({R, -R}))
local rrs = c:ireduce_scatter(lunar.zeros({2}), contrib(2 * N), 'min')
check("iall_gather", all_eq(rg:wait(), function(i) return (i % 2 == 0 and 1 or -1) * (i // 2) end))
check("ireduce_scatter min", all_eq(rrs:wait(), function(i) return 2 * R + i + 1 end))
do  -- a to-be-closed request is waited at the end of the block
  local x = contrib(2)
  do local r <close> = c:iall_reduce(x, 'max') end
  check("<close> request waits", all_eq(x, function(i) return N * (i + 1) end))
end
do  -- the request keeps its tensor alive: no other reference to it
  local r = c:iall_reduce(lunar.full({4096}, R + 1))
  collectgarbage(); collectgarbage()
  local res = r:wait()
  check("request keeps its tensor alive", res:min() == S and res:max() == S)
end
do  -- t:free() while in flight: the storage lives until the wait
  local x = lunar.full({4096}, R + 1)
  local r = c:iall_reduce(x)
  x:free()
  local ok, err = pcall(r.wait, r)
  check("wait after t:free() is safe", ok, err)
end
do  -- a request collected in flight is waited in __gc
  local x = lunar.full({8}, R + 1)
  c:iall_reduce(x, 'sum')   -- the request is dropped at once
  collectgarbage(); collectgarbage()
  check("a dropped request is waited in __gc", x:min() == S and x:max() == S, tostring(x))
end

-- ---- split groups -------------------------------------------------------------------------------
local color = R % 2
local sub = c:split(color, R)
local members = {}
for r = 0, N - 1 do if r % 2 == color then members[#members + 1] = r end end
local sS = 0
for _, r in ipairs(members) do sS = sS + r + 1 end
check("split size/rank", sub:size() == #members and sub:rank() == R // 2, tostring(sub))
check("split default name", sub:name() == "world/" .. color, sub:name())
check("split tostring", tostring(sub) == string.format("comm(world/%d, rank %d of %d)", color, R // 2, #members), tostring(sub))
local st = contrib(3); sub:all_reduce(st)
check("split all_reduce sum", all_eq(st, function(i) return sS * (i + 1) end, 1e-6))
st = contrib(3); sub:all_reduce(st, 'avg')
check("split all_reduce avg", all_eq(st, function(i) return sS / #members * (i + 1) end, 1e-6))
local sg = lunar.zeros({#members})
sub:all_gather(sg, lunar.tensor({R}))
check("split all_gather order (world ranks of the group)", all_eq(sg, function(i) return members[i + 1] end))
local sr = lunar.zeros({1})
sub:reduce_scatter(sr, lunar.full({#members}, R + 1), 'max')
check("split reduce_scatter", sr[1] == members[#members] + 1)
local sb = lunar.tensor({R})
sub:broadcast(sb, #members - 1)
check("split broadcast from its last rank", sb[1] == members[#members])
local sa = lunar.full({3}, R + 1)
sub:iall_reduce(sa, 'min'):wait()
check("split iall_reduce min", sa:max() == members[1] + 1)
check("split all_reduce_number", arn(sub, 1) == #members)
sub:barrier()
-- reversed key and a name; a split of a split
local rev = c:split(0, -R, "reversed")
check("split by key -rank reverses", rev:rank() == N - 1 - R and rev:name() == "reversed", tostring(rev))
local rg2 = lunar.zeros({N})
rev:all_gather(rg2, lunar.tensor({R}))
check("reversed all_gather order", all_eq(rg2, function(i) return N - 1 - i end))
local subsub = sub:split(0, 0)
check("split of a split", subsub:size() == #members and subsub:name() == "world/" .. color .. "/0")
if N > 1 and #members > 1 then   -- p2p in a group uses group ranks
  local me, n2 = sub:rank(), sub:size()
  local q = lunar.zeros({1})
  local rr = sub:irecv(q, (me - 1) % n2)
  sub:isend(lunar.tensor({R}), (me + 1) % n2):wait()
  rr:wait()
  check("split isend/irecv ring (group ranks)", q[1] == members[(me - 1) % n2 + 1])
end
c:barrier()

-- ---- argument errors name the op (every rank fails the same way, before MPI) ------------------------
expect_error("all_gather size mismatch", {"all_gather:", "comm 'world'", string.format("rank %d of %d", R, N),
             "out has 5 elements", string.format("expected size * in = %d * 2 = %d", N, 2 * N)},
             c.all_gather, c, lunar.zeros({5}), lunar.zeros({2}))
expect_error("iall_gather size mismatch", {"iall_gather:", "out has"}, c.iall_gather, c, lunar.zeros({2 * N + 1}), lunar.zeros({2}))
expect_error("reduce_scatter size mismatch", {"reduce_scatter:", "in has 3 elements",
             string.format("expected size * out = %d * 2 = %d", N, 2 * N)},
             c.reduce_scatter, c, lunar.zeros({2}), lunar.zeros({3}))
expect_error("ireduce_scatter size mismatch", {"ireduce_scatter:", "in has"}, c.ireduce_scatter, c, lunar.zeros({2}), lunar.zeros({2 * N + 1}))
expect_error("split comm size mismatch names the group", {"all_gather:", "comm 'world/" .. color .. "'"},
             sub.all_gather, sub, lunar.zeros({#members + 1}), lunar.zeros({1}))
expect_error("dtype mismatch", {"all_gather:", "dtype of out (f32) differs from in (bf16)"},
             c.all_gather, c, lunar.zeros({N}), lunar.zeros({1}, 'bf16'))
expect_error("avg on i32", {"all_reduce:", "'avg'", "i32"}, c.all_reduce, c, lunar.zeros({2}, 'i32'), 'avg')
expect_error("bf16 all_reduce", {"all_reduce:", "bf16", "cannot be reduced"}, c.all_reduce, c, lunar.zeros({2}, 'bf16'))
expect_error("unknown op", {"all_reduce: unknown op 'mean'"}, c.all_reduce, c, lunar.zeros({2}), 'mean')
expect_error("broadcast bad root", {"broadcast:", "root " .. N .. " is not a rank"}, c.broadcast, c, lunar.zeros({2}), N)
expect_error("send to self", {"send:", "is this rank"}, c.send, c, lunar.zeros({2}), R)
expect_error("irecv from self", {"irecv:", "is this rank"}, c.irecv, c, lunar.zeros({2}), R)
expect_error("non-contiguous", {"all_reduce:", "not contiguous"}, c.all_reduce, c, lunar.zeros({2, 3}):transpose(1, 2))
expect_error("negative color", {"split:", "color -1"}, c.split, c, -1, 0)
expect_error("not a tensor", {"bad argument"}, c.all_reduce, c, 3)
c:barrier()

-- ---- result --------------------------------------------------------------------------------------
-- the traffic counters (lunar.comm.stats): one call of each kind on the world, hand arithmetic for
-- N ranks and f32 tensors (4 bytes an element), counted when they start; reset_stats zeroes them
do
  lunar.comm.reset_stats()
  local z = lunar.comm.stats()
  check('stats after reset_stats: no calls, no bytes', z.total.calls == 0 and z.total.bytes == 0)
  local t = lunar.zeros({6})
  c:all_reduce(t)                                           -- 2 (N-1)/N x 24 bytes
  local big = lunar.zeros({3 * N})
  local small = lunar.zeros({3})
  c:reduce_scatter(small, big)                              -- (N-1)/N x 12 N bytes (in)
  c:all_gather(big, small)                                  -- (N-1)/N x 12 N bytes (out)
  c:broadcast(t, 0)                                         -- (N-1)/N x 24 bytes
  c:iall_reduce(t):wait()                                   -- 2 (N-1)/N x 24 bytes, non-blocking
  local st = lunar.comm.stats()
  local f = (N - 1) / N
  check('stats: all_reduce counts 2 calls, 2 x 2 (N-1)/N x 24 bytes',
    st.all_reduce.calls == 2 and close(st.all_reduce.bytes, 2 * 2 * f * 24, 1e-12), st.all_reduce.bytes)
  check('stats: reduce_scatter (N-1)/N x its input', st.reduce_scatter.calls == 1 and
    close(st.reduce_scatter.bytes, f * 12 * N, 1e-12), st.reduce_scatter.bytes)
  check('stats: all_gather (N-1)/N x its output', st.all_gather.calls == 1 and
    close(st.all_gather.bytes, f * 12 * N, 1e-12), st.all_gather.bytes)
  check('stats: broadcast (N-1)/N x the tensor', st.broadcast.calls == 1 and close(st.broadcast.bytes, f * 24, 1e-12))
  check('stats: total is the sum', st.total.calls == 5 and
    close(st.total.bytes, 4 * f * 24 + 2 * f * 12 * N + f * 24, 1e-12), st.total.bytes)
  t:free(); big:free(); small:free()
  lunar.comm.reset_stats()
end

checks.finish()
