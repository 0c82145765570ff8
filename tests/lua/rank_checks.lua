--- tests/lua/rank_checks.lua: the pass/fail counting of the check scripts
-- that tests/mpi/*.sh run on every rank of an mpirun job (comm_check.lua,
-- mappings_check.lua, parallel_check.lua, checkpoint_check.lua,
-- nccl_check.lua).
--
--   local checks = require('rank_checks').new('parallel_check', world)
--   local check = checks.check
--   check(name, cond, detail)   -- counts; a failure is written to stderr as
--                               -- "rank R: FAIL name: detail"
--   checks.skip(name, why)      -- counts a skip (what the machine lacks, e.g. a
--                               -- GPU; never a feature missing from Lunar)
--   checks.finish()             -- collective: prints "rank R: parallel_check
--                               -- N passed, M failed, K skipped", then raises an
--                               -- error on every rank when a check failed on any
-- A check never skips a collective, so a failure cannot hang the job.
local rank_checks = {}

--- @param label string the script's name in the summary line
-- @param comm the communicator whose ranks run the script (lunar.comm.world())
function rank_checks.new(label, comm)
  local R = comm:rank()
  local self = {passed = 0, failed = 0, skipped = 0}
  function self.check(name, cond, detail)
    if cond then self.passed = self.passed + 1 return end
    self.failed = self.failed + 1
    io.stderr:write(string.format('rank %d: FAIL %s%s\n', R, name, detail and (': ' .. tostring(detail)) or ''))
  end
  function self.skip(name, why)
    self.skipped = self.skipped + 1
    io.stdout:write(string.format('rank %d: skip %s%s\n', R, name, why and (': ' .. tostring(why)) or ''))
  end
  function self.finish()
    local total = comm:all_reduce_number(self.failed, 'sum')
    io.stdout:write(string.format('rank %d: %s %d passed, %d failed, %d skipped\n', R, label, self.passed,
      self.failed, self.skipped))
    io.stdout:flush()
    io.stderr:flush()
    if total > 0 then error(string.format('%s: %d checks failed over the ranks', label, total), 0) end
  end
  return self
end

return rank_checks
