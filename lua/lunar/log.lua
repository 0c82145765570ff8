--- lunar.log: rank-0 logging, a JSON-lines metrics file and a progress bar.
--
--   log.info(fmt, ...)                    printed by rank 0 only
--   m = log.metrics(path)                 opens a JSON-lines file (rank 0), nil path = none
--   m:write{step=, loss=, lr=, images_per_s=}   one JSON object per line, flushed
--   bar = log.progress(total, label)      a progress bar on a terminal, one-rank jobs only
--   bar:update(i, text)  bar:finish()
--   meter = log.step_meter{metrics=, log_every=, flops_per_image=, logger=}
--   meter:batch(loss, images)  meter:optimizer_step{step=, total=, epoch=, lr=, console=}
--                                         the per-step metrics line and the console line
--   log.peak_memory(device)               the run's peak memory, at the end
--
-- A "step" is an optimizer update (MAX_STEPS, LOG_EVERY, SAVE_EVERY and the
-- metrics file's `step` count them); with gradient_accumulation = n it takes
-- n batches.
local json = require('lunar.json')   -- every number exactly, keys sorted

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
  self.f:write(json.encode(obj), '\n')
  self.f:flush()
end

function Metrics:close()
  if self.f then self.f:close() self.f = nil end
end

--- The console line of a training step:
--   epoch 1 step 50/469 loss 0.8123 lr 1.990e-03 1502.1 img/s 12.3 GFLOP/s
-- epoch is 1-based, step the optimizer steps done, total the run's; images_per_s
-- global (every data-parallel rank), flops_per_image the training FLOPs of
-- one image (0: GFLOP/s shows 0).
function log.step_line(epoch, step, total, loss, lr, images_per_s, flops_per_image)
  return string.format('epoch %d step %d/%d loss %.4f lr %.3e %.1f img/s %.1f GFLOP/s', epoch, step, total, loss,
    lr, images_per_s, images_per_s * (flops_per_image or 0) / 1e9)
end

--- Logs the run's peak memory (lunar.memory: tensors and resident set) and,
-- when `device` is a GPU ('cuda:N'), the peak of its tensors.
--   peak memory: 410.2 MiB in tensors, 620.5 MiB resident
--   peak memory on cuda:0: 2210.4 MiB in tensors
function log.peak_memory(device)
  local mem = lunar.memory()
  log.info('peak memory: %.1f MiB in tensors, %.1f MiB resident', mem.peak_bytes / 2^20, mem.peak_rss_bytes / 2^20)
  if device and device ~= 'cpu' then
    log.info('peak memory on %s: %.1f MiB in tensors', device, lunar.cuda.memory(device).peak_bytes / 2^20)
  end
end

local StepMeter = {}
StepMeter.__index = StepMeter

--- What both training loops (examples/train_with_engine.lua and the trainer's
-- LogMetricByStepHook) report per optimizer step. opts: metrics (an object
-- with write(table), e.g. log.metrics(path); nil = no file), log_every (0 =
-- no console lines), flops_per_image, logger (an object with info(fmt, ...);
-- default lunar.log). Call meter:start() when an epoch starts (the clock),
-- meter:batch(loss, images) after every batch (images: global, every
-- data-parallel rank's), and meter:optimizer_step{...} after a batch that
-- updated the weights.
function log.step_meter(opts)
  opts = opts or {}
  local self = setmetatable({metrics = opts.metrics, log_every = opts.log_every or 0,
    flops_per_image = opts.flops_per_image or 0, logger = opts.logger or log, loss_sum = 0, batches = 0}, StepMeter)
  self:start()
  return self
end

--- Restarts the clocks and image counts (the first batch of an epoch is
-- timed from here). The losses of a step whose batches began in the previous
-- epoch are kept: its metrics line has the mean over all of them.
function StepMeter:start()
  local now = lunar.clock()
  self.t_step, self.t_line, self.images_step, self.images_line = now, now, 0, 0
end

--- Adds one batch: its loss (averaged over the data-parallel ranks) and its images.
function StepMeter:batch(loss, images)
  self.loss_sum, self.batches = self.loss_sum + loss, self.batches + 1
  self.images_step, self.images_line = self.images_step + images, self.images_line + images
end

--- Ends an optimizer step (args: step = optimizer steps done, total = the
-- run's, epoch = 1-based, lr = the update's, console = whether a console line
-- may be printed: false while a progress bar is drawn). Writes the metrics
-- line {step=, epoch=, loss= (the mean over the step's batches), lr=,
-- images_per_s=} and, every log_every steps and at the last, the console
-- line (log.step_line). Returns the step's mean loss.
function StepMeter:optimizer_step(args)
  local now = lunar.clock()
  local loss = self.loss_sum / math.max(1, self.batches)
  if self.metrics then
    self.metrics:write{step = args.step, epoch = args.epoch, loss = loss, lr = args.lr,
      images_per_s = self.images_step / (now - self.t_step)}
  end
  if args.console ~= false and self.log_every > 0 and (args.step % self.log_every == 0 or args.step == args.total) then
    self.logger.info('%s', log.step_line(args.epoch, args.step, args.total, loss, args.lr,
      self.images_line / (now - self.t_line), self.flops_per_image))
    self.t_line, self.images_line = now, 0
  end
  self.t_step, self.loss_sum, self.batches, self.images_step = now, 0, 0, 0
  return loss
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
