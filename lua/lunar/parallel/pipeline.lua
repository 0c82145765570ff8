--- lunar.parallel.pipeline: pipeline-parallel schedules over micro-batches
-- (GPipe, Huang et al. 2019; 1F1B / PipeDream-Flush, Narayanan et al. 2021,
-- as Megatron-LM's forward_backward_pipelining_without_interleaving).
--
--   local loss_sum = pipeline.run{
--     model = stage_model, criterion = ce, grid = g, schedule = '1f1b'|'gpipe',
--     images = x, labels = y,          -- this data-parallel rank's batch [B, ...], [B]
--     num_micro_batches = m,           -- B % m == 0
--     loss_scale = 1 / (m * ga),       -- gradient of each micro-batch loss
--     before_backward = function(k) end,  -- called before micro-batch k's backward (1-based)
--     check_loss = function(loss, k) end, -- called with each micro-batch loss (lunar.engine.check_loss)
--   }
--
-- Each pipeline rank holds one stage (a ViT built with opts.stage): stage 0
-- runs the patch embedding on images, the last stage the norm, head and the
-- loss. Between neighbours, activations [mb, N, C] (token slices with
-- sequence parallelism) go forward and their gradients backward over the
-- pipeline group (send/recv; a send paired with a receive is posted
-- non-blocking first, so two neighbours exchanging never deadlock). Every
-- micro-batch keeps its own forward context until its backward (GPipe: all m
-- in flight; 1F1B: at most pp - stage). Backward runs the micro-batches in
-- the order of their forwards in both schedules, so their gradients
-- accumulate in the same order (the two schedules give identical numbers).
-- Returns the sum of the micro-batch losses on the last stage, nil elsewhere.
local pipeline = {}

local TAG_FORWARD, TAG_BACKWARD = 11, 12

-- ---- point to point between neighbouring stages --------------------------------------------

local P2P = {}
P2P.__index = P2P

local function p2p(g)
  return setmetatable({comm = g.pp_group, prev = g.pp_rank - 1, next = g.pp_rank + 1,
    first = g.pp_rank == 0, last = g.pp_rank == g.pp_size - 1}, P2P)
end

function P2P:recv_forward(shape)
  if self.first then return nil end
  return self.comm:recv(lunar.empty(shape), self.prev, TAG_FORWARD)
end

function P2P:send_forward(x)
  if self.last then return end
  self.comm:isend(x, self.next, TAG_FORWARD):wait()
end

function P2P:recv_backward(shape)
  if self.last then return nil end
  return self.comm:recv(lunar.empty(shape), self.next, TAG_BACKWARD)
end

function P2P:send_backward(dx)
  if self.first then return end
  self.comm:isend(dx, self.prev, TAG_BACKWARD):wait()
end

--- Sends x forward and receives the gradient of an earlier output back.
function P2P:send_forward_recv_backward(x, shape)
  if self.last then return nil end
  local s = self.comm:isend(x, self.next, TAG_FORWARD)
  local dy = self.comm:recv(lunar.empty(shape), self.next, TAG_BACKWARD)
  s:wait()
  return dy
end

--- Sends dx backward and receives the next micro-batch's input.
function P2P:send_backward_recv_forward(dx, shape)
  if self.first then return nil end
  local s = self.comm:isend(dx, self.prev, TAG_BACKWARD)
  local x = self.comm:recv(lunar.empty(shape), self.prev, TAG_FORWARD)
  s:wait()
  return x
end

-- ---- one stage's steps ----------------------------------------------------------------------

local function micro_batch(t, k, mb)
  if not t then return nil end
  return t:narrow(1, (k - 1) * mb + 1, mb)
end

--- Runs a whole schedule for one batch; see the module doc.
function pipeline.run(args)
  local model, criterion, g = args.model, args.criterion, args.grid
  local m = args.num_micro_batches or 1
  local B = args.batch_size or (args.labels and args.labels:size(1)) or args.images:size(1)
  if B % m ~= 0 then
    error(string.format('pipeline: the batch of %d is not divisible by %d micro-batches', B, m), 0)
  end
  local mb = B // m
  local shape = model:hidden_shape(mb)
  local link = p2p(g)
  local scale = args.loss_scale or (1 / m)
  local loss_sum = 0
  local inflight = {}            -- k -> {ctx=, input=, logits=, cctx=}
  local first, last = link.first, link.last

  local function forward_step(k, input)
    local x = first and micro_batch(args.images, k, mb) or input
    local out, ctx = model:forward(x)
    local rec = {ctx = ctx, input = (not first) and input or nil}
    if last then
      local loss, cctx = criterion:forward(out, micro_batch(args.labels, k, mb))
      if args.check_loss then args.check_loss(loss, k) end   -- raises on a non-finite loss
      loss_sum = loss_sum + loss
      rec.logits, rec.cctx = out, cctx
      out = nil
    end
    inflight[k] = rec
    return out
  end

  -- dy: the gradient of the stage's output (nil on the last stage: from the loss)
  local function backward_step(k, dy)
    local rec = inflight[k]
    inflight[k] = nil
    if args.before_backward then args.before_backward(k) end
    if last then
      dy = criterion:backward(rec.cctx, scale)
      rec.logits:free()                -- this stage's output, freed by the schedule that kept it
    end
    local dx = model:backward(rec.ctx, dy, not first)   -- the first stage sends no gradient back
    dy:free()
    if rec.input then rec.input:free() end
    return dx
  end

  local function free(t) if t then t:free() end end

  if args.schedule == 'gpipe' then
    for k = 1, m do
      local out = forward_step(k, link:recv_forward(shape))
      link:send_forward(out)
      free(out)
    end
    for k = 1, m do
      local dx = backward_step(k, link:recv_backward(shape))
      link:send_backward(dx)
      free(dx)
    end
  elseif args.schedule == '1f1b' or args.schedule == nil then
    local warmup = math.min(g.pp_size - g.pp_rank - 1, m)
    local remaining = m - warmup
    for k = 1, warmup do
      local out = forward_step(k, link:recv_forward(shape))
      link:send_forward(out)
      free(out)
    end
    local input = remaining > 0 and link:recv_forward(shape) or nil
    for i = 1, remaining do
      local kf, kb = warmup + i, i
      local out = forward_step(kf, input)
      local dy = link:send_forward_recv_backward(out, shape)
      free(out)
      local dx = backward_step(kb, dy)
      if i == remaining then
        link:send_backward(dx)
        input = nil
      else
        input = link:send_backward_recv_forward(dx, shape)
      end
      free(dx)
    end
    for k = remaining + 1, m do        -- cool-down
      local dx = backward_step(k, link:recv_backward(shape))
      link:send_backward(dx)
      free(dx)
    end
  else
    error(string.format("pipeline: unknown schedule '%s' ('1f1b' or 'gpipe')", tostring(args.schedule)), 0)
  end
  return last and loss_sum or nil
end

--- A forward-only pass of one batch through the pipeline (evaluation): stage
-- 0 embeds the images, every stage sends its activations on, and the last
-- stage returns the logits [B, classes] (nil elsewhere). The model should be
-- in evaluation mode (no activations kept).
function pipeline.forward_only(model, g, images, batch)
  local link = p2p(g)
  local shape = model:hidden_shape(batch)
  local x = link.first and images or link:recv_forward(shape)
  local out, ctx = model:forward(x)
  ctx:free()
  if not link.first then x:free() end
  if link.last then return out end
  link:send_forward(out)
  out:free()
  return nil
end

return pipeline
