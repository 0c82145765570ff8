-- tests/fail/breakpoint_loop.lua: a few all_reduce steps with lunar.breakpoint()
-- in the loop on every rank (tests/fail/test_breakpoint.sh runs it under
-- mpirun -np 2 --repl-rank 1 in tmux, and alone through a pipe).
--
-- Rank r contributes (r + 1) * step at step 1..STEPS, so on 2 ranks each
-- all_reduce sums to 3 * step and the final total is 3 * (1 + 2 + 3) = 18
-- (1 * 6 = 6 alone). `contrib` and `my_rank` are locals whose values the
-- debugger must show; `scale` is an upvalue of `contribution`. A rank stopped
-- at the breakpoint holds the others in their next all_reduce.
-- Arguments: [STEPS (default 3)].
local STEPS = tonumber(arg[1]) or 3
local comm = lunar.comm.world()
local my_rank = comm:rank()
local scale = my_rank + 1

local function contribution(step)
  local value = scale * step
  return value
end

local total = 0
for step = 1, STEPS do
  local contrib = contribution(step)
  local t = lunar.tensor({contrib})
  comm:all_reduce(t)
  total = total + t:totable()[1]
  lunar.breakpoint()
end
print(string.format("rank %d: final total %g", my_rank, total))
