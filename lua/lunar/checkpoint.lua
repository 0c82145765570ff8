--- lunar.checkpoint: sharded checkpoints in safetensors with timm's names,
-- written atomically, resumed bitwise, loaded into another parallel layout.
--
--   local checkpoint = require('lunar.checkpoint')
--   checkpoint.save(dir, state)            -> the path dir/step_<N>
--   checkpoint.latest(dir)                 -> the newest complete checkpoint, its step; or nil
--   checkpoint.load(path, state)           -> info {step=, epoch=, updates=, loader={epoch=, batch=}, ...}
--   checkpoint.maybe_resume(cfg, state)    -> info or nil (RESUME: '', 'auto' or a path)
--   checkpoint.maybe_save(cfg, state [, {final=true}]) -> the path, or nil (CHECKPOINT_DIR, SAVE_EVERY)
--   checkpoint.register_slicer(fn)         see "Shards" below
--   checkpoint.pieces(p), checkpoint.prune(dir, keep), checkpoint.read_index(path)
--
-- state = {model=, optimizer=, lr_scheduler=, engine=, loader= (or train_loader=),
--          step= (optimizer steps done: engine.optimizer_steps, what SAVE_EVERY and
--          the directory name count), epoch=, updates= (optimizer updates; default
--          engine.optimizer_steps or optimizer.t), rng= (a table of plain data, saved as
--          is), config= (the resolved config), grid= (lunar.parallel's grid; nil
--          on one rank), keep= (KEEP_CHECKPOINTS; default config's)}
-- Only model and step are required for save; load restores what the state has.
--
-- Layout of a checkpoint (dir/step_<N>/):
--   model_rank<R>.safetensors  the tensors rank R holds and writes: each parameter
--       under its timm name (this rank's shard of it), the optimizer state as
--       per-parameter tensors `optim.<buffer>.<name>` (AdamW: exp_avg,
--       exp_avg_sq; SGD: momentum_buffer), views of the optimizer's flat buffers,
--       and, when saved in the middle of a gradient accumulation cycle, the
--       accumulated gradients `grad.<name>`. Its __metadata__ "lunar.shard"
--       (JSON) lists, for each tensor, the full shape and the pieces it holds.
--   index.json  written last, by rank 0: format, step, epoch, updates, loader
--       position (epoch, batch), optimizer kind and step count, LR schedule
--       state, engine counters, RNG (seed, every Dropout's call counter, the
--       state's rng table), the parallel layout, the resolved config (as a
--       JSON object; also written as config.lua, `return <config.dump>`, a
--       config file) and the model dims, the files, and for every tensor its
--       dtype, full shape and slices: {file=, key=, shape= (of the stored
--       tensor), ranges={{start, length} per dim of the full tensor},
--       ["local"]={{start, length} per dim of the stored tensor}} (0-based).
--
-- Atomicity: everything is written into dir/step_<N>.tmp.<pid of rank 0>;
-- rank 0 writes index.json there (fsync'd), renames the directory to
-- dir/step_<N> and fsyncs dir. An interrupted save leaves only a .tmp
-- directory, which latest() and RESUME='auto' ignore, so it never replaces or
-- shadows the last complete checkpoint. Re-saving an existing step moves the
-- old directory aside, renames the new one in, then removes the old one.
-- With several ranks (lunar.comm), the ranks meet in barriers: after rank 0
-- made the temporary directory, after every shard is written (rank 0 then
-- reads the shard headers to build the index: CHECKPOINT_DIR must be on a file
-- system every rank sees), and after the rename. On one rank (no MPI) there is
-- no communication.
--
-- Who writes what: the ranks of data-parallel rank 0 write, every other data
-- parallel replica holds the same values. A tensor-parallel shard (a parameter
-- with p.shard) is written by each tensor rank (not by a copy: p.shard.replica
-- > 0, 2.5D's depth layers); a replicated parameter by tensor rank 0; each
-- pipeline stage writes its own parameters.
-- Sharded data parallelism (parallel.zero, lunar.parallel.zero: the state's
-- optimizer is the sharded one) saves the shards as they are, no gather: each
-- rank of the first replica of a shard group writes its pieces (a flat range
-- of a parameter's local tensor, the master weights and the optimizer state)
-- as the boxes of that range (checkpoint's reshard.flat_boxes: at most 2 per
-- dimension), stored as `<name>@<flat offset>` and listed in the index as
-- slices of `<name>` like any other shard; loading fills each piece of this
-- rank's shards (and, at stages 1 and 2, the whole local parameters) from the
-- slices, so any layout, sharded or not, loads into any other. Saving (and
-- resuming a save from) the middle of a gradient accumulation cycle is refused
-- under ZeRO (its gradient shard is reduced, not a local gradient).
--
-- Loading validates everything before any state in memory changes: index.json
-- must exist and be valid JSON of this format, every file it lists must exist,
-- the model dims of the saved config must equal this run's (when state.config
-- is given), every parameter (and optimizer buffer) of this rank's model must
-- be in the index with the model's full shape and dtype, its slices must not
-- overlap and must cover what this rank needs, each slice's file must be a
-- valid safetensors file (the C reader checks the header JSON, dtypes, shapes
-- and offsets) holding the tensor with the dtype and shape the index says, the
-- loader position must be within the loader's epoch. The tensors are read into
-- temporaries; only when all are read are they copied into the model and the
-- optimizer and the counters set. Errors name the file and the tensor.
--
-- Shards (resharding): a parameter's place in the full tensor is given by
-- checkpoint.pieces(p): a list of {full = ranges, ["local"] = ranges} and the
-- full shape. Built in: a plain parameter (the whole tensor); p.shard =
-- {dim=, groups=, size=, rank=, full_shape=} (lunar.nn.shard_pieces: the
-- tensor-parallel layout of lunar.parallel); p.shard = {dim=, start=, length=,
-- full_shape=} (one contiguous slice, start 0-based); p.shard = {pieces=,
-- full_shape=, replica=} (N-d pieces as above: the 2D / 2.5D / 3D modes of
-- lunar.parallel.tensor_2d and tensor_3d). register_slicer(fn)
-- adds fn(p) -> nil | {full_shape=, pieces={{full=, ["local"]=}, ...}} tried
-- before the built-ins. Loading assembles each piece a rank needs from the
-- stored slices that overlap it, so any saved layout loads into any other.
--
-- Resuming on the same layout is bitwise identical to not stopping: the
-- loader's shuffle is a pure function of (seed, epoch) and its position is
-- restored with loader:seek; dropout masks are Philox streams keyed by
-- (seed, module path, call counter) and the counters are restored; the LR
-- schedule is a function of the update count (engine.optimizer_steps). Resuming
-- with another data-parallel size continues at the same batch index, which
-- is the same point of the epoch when the global batch is unchanged.
--
-- The parts, one job each (lua/lunar/checkpoint/):
--   format.lua   names, JSON (lunar.json), reading and checking index.json, listing checkpoints
--   state.lua    what a training state holds (parameters, optimizer views, counters) and the rank layout
--   reshard.lua  where a parameter sits in the full tensor; the reader that assembles pieces from slices
--   save.lua     writing shards and the index atomically; pruning
--   load.lua     restoring a state, everything checked before anything changes
--   policy.lua   the config keys: RESUME, CHECKPOINT_DIR, SAVE_EVERY (KEEP_CHECKPOINTS in save)
local format = require('lunar.checkpoint.format')
local reshard = require('lunar.checkpoint.reshard')
local save = require('lunar.checkpoint.save')
local load = require('lunar.checkpoint.load')
local policy = require('lunar.checkpoint.policy')

return {
  FORMAT = format.FORMAT, VERSION = format.VERSION,
  MODEL_KEYS = format.MODEL_KEYS,        -- the config keys that fix the model's parameter shapes
  save = save.save, prune = save.prune,
  load = load.load,
  latest = format.latest, read_index = format.read_index,
  pieces = reshard.pieces, register_slicer = reshard.register_slicer,
  maybe_resume = policy.maybe_resume, maybe_save = policy.maybe_save,
  shape_str = format.shape_str, same_shape = format.same_shape,   -- for lunar.timm's checks of safetensors headers
}
