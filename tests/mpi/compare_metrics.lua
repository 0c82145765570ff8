-- tests/mpi/compare_metrics.lua: two METRICS_FILEs of examples/train_with_engine.lua
-- (JSON lines) hold the same training: the same steps, every loss within TOL
-- relative (default 1e-5), the same test accuracies.
--   build/lunar tests/mpi/compare_metrics.lua -- A.jsonl B.jsonl [TOL]
-- Prints "metrics match: N losses, worst relative difference X" and exits 0,
-- or names the first difference and exits 1.
local json = require('lunar.json')
local a_path, b_path, tol = arg[1], arg[2], tonumber(arg[3] or '1e-5')

local function read(path)
  local f = assert(io.open(path), 'cannot open ' .. tostring(path))
  local rows = {}
  for line in f:lines() do rows[#rows + 1] = json.decode(line) end
  f:close()
  return rows
end

local a, b = read(a_path), read(b_path)
local function fail(fmt, ...)
  io.stderr:write('metrics differ: ', string.format(fmt, ...), '\n')
  os.exit(1)
end
if #a ~= #b then fail('%d lines in %s, %d in %s', #a, a_path, #b, b_path) end
local worst, n = 0, 0
for i = 1, #a do
  local x, y = a[i], b[i]
  if x.step ~= y.step then fail('line %d: step %s vs %s', i, tostring(x.step), tostring(y.step)) end
  if (x.loss == nil) ~= (y.loss == nil) then fail('line %d: a loss in one file only', i) end
  if x.loss then
    local d = math.abs(x.loss - y.loss) / math.max(math.abs(y.loss), 1e-30)
    worst, n = math.max(worst, d), n + 1
    if d > tol then fail('step %d: loss %.10g vs %.10g (relative %.3g > %g)', x.step, x.loss, y.loss, d, tol) end
  end
  if x.test_accuracy ~= y.test_accuracy then
    fail('epoch %s: test accuracy %s vs %s', tostring(x.epoch), tostring(x.test_accuracy), tostring(y.test_accuracy))
  end
end
print(string.format('metrics match: %d losses, worst relative difference %.3g', n, worst))
