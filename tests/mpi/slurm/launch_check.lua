-- tests/mpi/slurm/launch_check.lua [WORLD NODES]: what each rank learned from
-- the MPI runtime under a launcher (tests/mpi/test_slurm.sh runs it with
-- `srun -N 2 -n 4 --mpi=pmix` on two fake nodes). Checks, on every rank:
--   lunar.rank / world_size agree with lunar.comm.world() and with Slurm's
--   SLURM_PROCID / SLURM_NTASKS (when set), world_size == WORLD;
--   lunar.local_rank (MPI_Comm_split_type SHARED in the host) agrees with
--   SLURM_LOCALID; gathered over the world: NODES distinct node names, on each
--   node the local ranks are 0 .. k-1 in rank order;
--   all_reduce (tensor, sum and avg) and all_reduce_number give the sums.
-- Prints "rank R of N: local rank L on node X" and
-- "rank R: launch_check P passed, F failed"; raises an error if F > 0.
-- Every rank runs every collective whatever fails, so a failure cannot hang.
local c = lunar.comm.world()
local R, N, L = lunar.rank, lunar.world_size, lunar.local_rank
local want_world = tonumber(arg[1] or '') or N
local want_nodes = tonumber(arg[2] or '') or tonumber(os.getenv('SLURM_JOB_NUM_NODES') or '') or 1
local node = os.getenv('SLURMD_NODENAME') or io.popen('hostname'):read('l') or '?'
local passed, failed = 0, 0
local function check(name, cond, detail)
  if cond then passed = passed + 1 else
    failed = failed + 1
    io.stderr:write(string.format('rank %d: FAIL %s%s\n', R, name, detail and (': ' .. tostring(detail)) or ''))
  end
end
local function env_int(k) return tonumber(os.getenv(k) or '') end

print(string.format('rank %d of %d: local rank %d on node %s', R, N, L, node))
check('lunar.rank == comm rank', R == c:rank(), c:rank())
check('lunar.world_size == comm size', N == c:size(), c:size())
check('world size ' .. want_world, N == want_world, N)
if env_int('SLURM_PROCID') then
  check('rank == SLURM_PROCID', R == env_int('SLURM_PROCID'), os.getenv('SLURM_PROCID'))
  check('world size == SLURM_NTASKS', N == env_int('SLURM_NTASKS'), os.getenv('SLURM_NTASKS'))
  check('local rank == SLURM_LOCALID', L == env_int('SLURM_LOCALID'), os.getenv('SLURM_LOCALID'))
end

-- node names: a small integer id per distinct name, agreed through rank 0
local name_buf = lunar.zeros({N * 64})
local mine = lunar.zeros({64})
for i = 1, math.min(#node, 64) do mine[i] = node:byte(i) end
c:all_gather(name_buf, mine)
local names, by_rank = {}, {}
local v = name_buf:totable()
for r = 0, N - 1 do
  local chars = {}
  for i = 1, 64 do
    local b = math.floor(v[r * 64 + i])
    if b == 0 then break end
    chars[#chars + 1] = string.char(b)
  end
  by_rank[r] = table.concat(chars)
  names[by_rank[r]] = names[by_rank[r]] or {}
  table.insert(names[by_rank[r]], r)
end
local locals = lunar.zeros({N})
c:all_gather(locals, lunar.tensor({L}))
local lv = locals:totable()
local n_nodes = 0
for name, ranks in pairs(names) do
  n_nodes = n_nodes + 1
  for k, r in ipairs(ranks) do
    check(string.format('node %s: rank %d has local rank %d', name, r, k - 1), lv[r + 1] == k - 1, lv[r + 1])
  end
end
check(string.format('%d distinct node names', want_nodes), n_nodes == want_nodes, n_nodes)

-- reductions
local t = lunar.tensor({R + 1, 2 * (R + 1)})
c:all_reduce(t)
local s = N * (N + 1) / 2
local tv = t:totable()
check('all_reduce sum', tv[1] == s and tv[2] == 2 * s, table.concat(tv, ','))
local a = lunar.tensor({R})
c:all_reduce(a, 'avg')
check('all_reduce avg', math.abs(a:item() - (N - 1) / 2) < 1e-6, a:item())
check('all_reduce_number', c:all_reduce_number(R + 1) == s)
c:barrier()

if R == 0 then
  local parts = {}
  for r = 0, N - 1 do parts[#parts + 1] = string.format('%d:%s/%d', r, by_rank[r], math.floor(lv[r + 1])) end
  print(string.format('launch_check: world %d on %d nodes, rank:node/local %s', N, n_nodes, table.concat(parts, ' ')))
end
print(string.format('rank %d: launch_check %d passed, %d failed', R, passed, failed))
if failed > 0 then error(string.format('launch_check: %d checks failed on rank %d', failed, R)) end
