--- lunar.log: rank-0 logging, a JSON-lines metrics file and a progress bar.
--
--   log.info(fmt, ...)                    printed by rank 0 only
--   m = log.metrics(path)                 opens a JSON-lines file (rank 0), nil path = none
--   m:write{step=, loss=, lr=, images_per_s=}   one JSON object per line, flushed
--   bar = log.progress(total, label)      a progress bar on a terminal, one-rank jobs only
--   bar:update(i, text)  bar:finish()
local cjson = require('cjson')
cjson.encode_number_precision(14)   -- 14 significant digits: every f32 value round-trips

local log = {}

function log.is_main() return (lunar.rank or 0) == 0 end

function log.info(fmt, ...)
  if log.is_main() then
    io.stdout:write(string.format(fmt, ...), '\n')
    io.stdout:flush()
  end
end

local Metrics = {}
Metrics.__index = Metrics

--- Opens `path` for writing JSON lines on rank 0 (truncating it).
function log.metrics(path)
  local self = setmetatable({}, Metrics)
  if path and path ~= '' and log.is_main() then
    local f, err = io.open(path, 'w')
    if not f then error('metrics: cannot open METRICS_FILE ' .. path .. ': ' .. tostring(err), 0) end
    self.f = f
  end
  return self
end

--- Writes one object (a table of numbers and strings) as a line.
function Metrics:write(obj)
  if not self.f then return end
  self.f:write(cjson.encode(obj), '\n')
  self.f:flush()
end

function Metrics:close()
  if self.f then self.f:close() self.f = nil end
end

local Progress = {}
Progress.__index = Progress

--- Whether a progress bar is drawn: on rank 0 of a one-rank job, when stdout
-- is a terminal. Under an MPI launcher with several ranks it is off: Open MPI
-- gives every rank a pty, so isatty says yes even when mpirun's own output
-- goes to a file or a pipe (the bar's carriage returns would fill the log);
-- such jobs print the LOG_EVERY lines instead. mpirun -np 1 is a one-rank job.
function log.progress_enabled()
  return log.is_main() and (lunar.world_size or 1) <= 1 and lunar.isatty(1)
end

--- A progress bar (see log.progress_enabled; inactive otherwise).
function log.progress(total, label)
  return setmetatable({total = total, label = label or '', active = log.progress_enabled(),
    t0 = lunar.clock()}, Progress)
end

function Progress:update(i, text)
  if not self.active then return end
  local width = 30
  local frac = self.total > 0 and math.min(1, i / self.total) or 0
  local filled = math.floor(frac * width + 0.5)
  io.stdout:write(string.format('\r%s [%s%s] %d/%d %s\27[K', self.label, string.rep('=', filled),
    string.rep(' ', width - filled), i, self.total, text or ''))
  io.stdout:flush()
end

function Progress:finish()
  if self.active then io.stdout:write('\n') io.stdout:flush() end
end

return log
