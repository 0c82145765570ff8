--- lunar.tensorboard: the metrics of a run as TensorBoard scalars (event
-- files written by core/io/tfevents.c through lunar.io.tfevents).
--
--   local tb = require('lunar.tensorboard')
--   local w = tb.writer(dir, {device = 'cpu'})   -- rank 0 opens dir/events.out.tfevents.<time>.<host>
--   w:write{step = 3, loss = 2.1, lr = 1e-3, images_per_s = 812.5}   -- a metrics line (lunar.log)
--   w:write{step = 469, test_accuracy = 0.82, test_loss = 0.49}
--   w:close()
--   m = tb.tee(metrics, dir, opts)   -- writes every line to a lunar.log.metrics file and to TensorBoard
--
-- A metrics line becomes one event at its `step` (optimizer steps done):
--   loss -> train/loss, lr -> train/lr, images_per_s -> train/images_per_s and
--   memory/peak_bytes (the peak bytes in tensors so far on opts.device:
--   lunar.memory() for 'cpu', lunar.cuda.memory(device) for a GPU);
--   an evaluation line (one with test_accuracy or test_loss) writes
--   test/accuracy and test/loss only.
-- Values are stored as f32 (TensorBoard's simple_value). Each event is in the
-- file when write returns (a crash keeps the earlier steps). On ranks other
-- than 0, and for dir = '' or nil, the writer does nothing.
-- @module lunar.tensorboard
local log = require('lunar.log')

local tensorboard = {}

--- metrics key -> tag, for the lines of a training step, in the order written
tensorboard.TRAIN_TAGS = {
  {'loss', 'train/loss'}, {'lr', 'train/lr'}, {'images_per_s', 'train/images_per_s'},
}
--- metrics key -> tag, for an evaluation line
tensorboard.TEST_TAGS = {{'test_accuracy', 'test/accuracy'}, {'test_loss', 'test/loss'}}
--- the tag of the peak tensor memory (bytes), written with every training step
tensorboard.MEMORY_TAG = 'memory/peak_bytes'

local Writer = {}
Writer.__index = Writer

--- A writer of dir's event file on rank 0 (opts.device: whose memory to
-- report, default 'cpu'). Raises a user error naming TENSORBOARD_DIR when
-- the directory or the file cannot be made.
function tensorboard.writer(dir, opts)
  local self = setmetatable({device = opts and opts.device or 'cpu'}, Writer)
  if dir and dir ~= '' and log.is_main() then
    local ok, w = pcall(lunar.io.tfevents, dir)
    if not ok then lunar.error('TENSORBOARD_DIR: ' .. tostring(w)) end
    self.w = w
  end
  return self
end

--- The event file's path (nil where nothing is written).
function Writer:path() return self.w and self.w:path() end

local function peak_bytes(device)
  if device and device ~= 'cpu' then return lunar.cuda.memory(device).peak_bytes end
  return lunar.memory().peak_bytes
end

--- Writes one metrics line (a table with `step`) as one event; keys without
-- a tag (epoch, train_seconds, ...) are left out.
function Writer:write(obj)
  if not self.w then return end
  local tags, values = {}, {}
  local function add(tag, v)
    if type(v) == 'number' then tags[#tags + 1], values[#values + 1] = tag, v end
  end
  if obj.test_accuracy ~= nil or obj.test_loss ~= nil then
    for _, kt in ipairs(tensorboard.TEST_TAGS) do add(kt[2], obj[kt[1]]) end
  else
    for _, kt in ipairs(tensorboard.TRAIN_TAGS) do add(kt[2], obj[kt[1]]) end
    add(tensorboard.MEMORY_TAG, peak_bytes(self.device))
  end
  if #tags > 0 then self.w:scalars(math.tointeger(obj.step) or 0, tags, values) end
end

function Writer:close()
  if self.w then self.w:close(); self.w = nil end
end

--- An object with write(obj) and close() that writes each line to `metrics`
-- (an object with write/close, e.g. lunar.log.metrics(path)) and to a
-- TensorBoard writer of `dir` (opts as tensorboard.writer). dir = '' or nil:
-- `metrics` itself.
function tensorboard.tee(metrics, dir, opts)
  if not dir or dir == '' then return metrics end
  local tb = tensorboard.writer(dir, opts)
  return {
    tensorboard = tb,
    write = function(_, obj) metrics:write(obj); tb:write(obj) end,
    close = function() metrics:close(); tb:close() end,
  }
end

return tensorboard
