--- lunar.checkpoint.policy: when to save and what to resume from, as the
-- config keys CHECKPOINT_DIR, SAVE_EVERY, KEEP_CHECKPOINTS and RESUME say.
--
--   policy.maybe_resume(cfg, state)              -> load's info, or nil
--   policy.maybe_save(cfg, state [, {final=true}]) -> the path, or nil
local log = require('lunar.log')
local format = require('lunar.checkpoint.format')
local S = require('lunar.checkpoint.state')
local save = require('lunar.checkpoint.save')
local load = require('lunar.checkpoint.load')

local M = {}

--- Resumes as cfg.RESUME says: '' -> nil; 'auto' -> the newest complete
-- checkpoint in cfg.CHECKPOINT_DIR (nil, starting fresh, when there is
-- none); else the checkpoint at that path (a step_<N> directory). Returns
-- checkpoint.load's info, or nil. state.config defaults to cfg. With several
-- ranks, rank 0 picks the 'auto' checkpoint for all.
function M.maybe_resume(cfg, state)
  local r = cfg.RESUME or ''
  if r == '' then return nil end
  state.config = state.config or cfg
  local path = r
  if r == 'auto' then
    if (cfg.CHECKPOINT_DIR or '') == '' then
      error("checkpoint: RESUME='auto' needs CHECKPOINT_DIR (the directory to look for checkpoints in)", 0)
    end
    local L = S.layout(state)
    local p, step = format.latest(cfg.CHECKPOINT_DIR)
    step = S.from_rank0(L, step or -1)
    if step < 0 then
      log.info('checkpoint: no complete checkpoint in %s: starting fresh', cfg.CHECKPOINT_DIR)
      return nil
    end
    path = L.world_size > 1 and format.join(cfg.CHECKPOINT_DIR, 'step_' .. step) or p
  end
  local info = load.load(path, state)
  log.info('checkpoint: resumed from %s (step %d%s)', info.path, info.step,
    info.loader and string.format(', epoch %d, batch %d', info.loader.epoch + 1, info.loader.batch) or '')
  return info
end

local last_saved = {}   -- CHECKPOINT_DIR -> the step saved last

--- Saves when cfg.CHECKPOINT_DIR is set and state.step is a multiple of
-- cfg.SAVE_EVERY (> 0), or, with opts.final, at the end of training unless
-- this step was just saved. Old checkpoints beyond KEEP_CHECKPOINTS go
-- (checkpoint.save). Returns the checkpoint's path, or nil.
function M.maybe_save(cfg, state, opts)
  local dir = cfg.CHECKPOINT_DIR or ''
  if dir == '' then return nil end
  local every = cfg.SAVE_EVERY or 0
  local due
  if opts and opts.final then
    due = last_saved[dir] ~= state.step
  else
    due = every > 0 and state.step > 0 and state.step % every == 0
  end
  if not due then return nil end
  state.config = state.config or cfg
  local path = save.save(dir, state)
  last_saved[dir] = state.step
  log.info('checkpoint: saved %s', path)
  return path
end

return M
