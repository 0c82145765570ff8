--- lunar.setup: builds a training run from a config, the one place both
-- examples, the benches and the multi-rank checks do it.
--
--   local run = require('lunar.setup').from_config(lunar.args.config, lunar.args.overrides)
--   run.engine:train_step(images, labels)
--
-- from_config(cfg, overrides, opts): cfg is a config file's path (nil: the
-- defaults), loaded with the `key=value` overrides (a list of strings), or
-- an already resolved config table (config.load / config.from_table; then
-- overrides must be nil). In order:
--   1. the config, loaded and checked against this machine (config.check_machine:
--      e.g. precision = 'bf16' needs avx512_bf16, device = 'cuda' a GPU) and
--      against MEMORY_BUDGET (lunar.memory.check_budget), all through
--      parallel.same_on_every_rank: an error is printed once and every rank
--      exits 1, before any collective or allocation;
--   2. NUM_THREADS (when > 0) threads for the kernels;
--   3. the grid (parallel.initialize(cfg, opts.world, {quiet = opts.quiet}));
--      opts.grid: a grid already made from this config, or false: none (one
--      rank's plain model, no data-parallel reducer);
--   4. the loaders (opts.loaders ~= false): this data-parallel rank's shard of
--      the train split and of the test split (batches of 500: evaluation keeps
--      no activations);
--   5. the model: this rank's tensor shards and pipeline stage of the config's
--      ViT (parallel.vit), or the config's MODEL (setup.config_model: models
--      as code, data, tensor and pipeline parallel), materialized from opts.seed (default
--      SEED) with INIT and precision, then PRETRAINED's timm weights loaded
--      into it (lunar.timm.load_pretrained; a user error naming the key);
--      under ZeRO-3 (without PRETRAINED; a MODEL under domain parallelism only) laid
--      out without storage (zero.materialize_deferred) and initialized shard by
--      shard in step 6;
--   6. the criterion (cross-entropy with LABEL_SMOOTHING) and the optimizer
--      (OPTIMIZER = 'adamw': LEARNING_RATE, BETA1, BETA2, EPS, WEIGHT_DECAY;
--      'sgd': LEARNING_RATE, MOMENTUM, WEIGHT_DECAY);
--      with parallel.zero at stage >= 1, sharded over the data-parallel group
--      (lunar.parallel.zero; run.zero, also the engine's);
--   7. the LR schedule (with loaders): warmup_cosine over the run's optimizer
--      steps, NUM_EPOCHS * (batches per epoch // gradient_accumulation), warmup
--      WARMUP_EPOCHS of them, down to MIN_LR; MAX_STEPS only cuts the run short;
--   8. the engine (clip_grad_norm, gradient_accumulation, the grid's micro-batches
--      and pipeline schedule), given the schedule unless opts.engine_schedule
--      is false (the trainer's LRSchedulerHook takes it instead);
--      opts.engine: more engine.initialize arguments (bucket_size).
-- Returns a table:
--   cfg, grid, model, criterion, optimizer, lr_scheduler (nil without loaders),
--   engine, train_loader, test_loader (nil with opts.loaders = false),
--   num_params (the whole model's, not this rank's), flops_per_image (training
--   FLOPs of one image, models.vit_train_flops_per_image; for a MODEL,
--   counted by lunar.nn.flops; under domain parallelism by formula, the
--   same GEMMs: 6 * GEMM weights * tokens + 6 * head weights + 12 * depth *
--   tokens^2 * width), global_batch
--   (BATCH_SIZE * data-parallel size), batches_per_epoch, max_steps (the
--   optimizer steps the run trains: NUM_EPOCHS' worth, cut to MAX_STEPS when
--   set; with loaders).
-- @module lunar.setup
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local data = require('lunar.data')
local models = require('lunar.models')
local parallel = require('lunar.parallel')
local engine_mod = require('lunar.engine')

local setup = {}

--- The optimizer the config names, over `params` (a model's parameters()).
function setup.optimizer(cfg, params)
  if cfg.OPTIMIZER == 'sgd' then
    return optim.SGD(params, {lr = cfg.LEARNING_RATE, momentum = cfg.MOMENTUM, weight_decay = cfg.WEIGHT_DECAY})
  end
  return optim.AdamW(params, {lr = cfg.LEARNING_RATE, betas = {cfg.BETA1, cfg.BETA2}, eps = cfg.EPS,
    weight_decay = cfg.WEIGHT_DECAY})
end

--- The run's LR schedule: warmup_cosine over NUM_EPOCHS epochs of
-- `batches_per_epoch` batches, counted in optimizer steps (one every
-- gradient_accumulation batches).
function setup.lr_schedule(cfg, batches_per_epoch)
  local steps_per_epoch = math.max(1, batches_per_epoch // cfg.gradient_accumulation)
  return schedule.warmup_cosine{base_lr = cfg.LEARNING_RATE, min_lr = cfg.MIN_LR,
    warmup_steps = math.floor(cfg.WARMUP_EPOCHS * steps_per_epoch + 0.5),
    total_steps = steps_per_epoch * cfg.NUM_EPOCHS}
end

--- The optimizer steps a run of NUM_EPOCHS epochs of `batches_per_epoch`
-- batches trains, cut to MAX_STEPS when that is set (> 0).
function setup.max_steps(cfg, batches_per_epoch)
  local n = batches_per_epoch * cfg.NUM_EPOCHS // cfg.gradient_accumulation
  if cfg.MAX_STEPS > 0 then n = math.min(n, cfg.MAX_STEPS) end
  return n
end

--- The model of a config that defines one (models as code): cfg.MODEL(cfg,
-- lunar.nn), checked before anything is allocated; with tensor parallelism
-- the `nn` MODEL receives builds Attention, MLP and Block split across the
-- tensor group (Megatron's 1D form, lunar.parallel.tp_context) and every
-- other layer replicated; with pipeline parallelism
-- this rank's stage (nn.Sequential:pipeline_stage over the child 'blocks',
-- split as the grid splits DEPTH), with hidden_shape(batch) measured by one
-- image through the children before 'blocks'. Raises, naming the config file
-- and line where MODEL is defined: sequence parallelism (not yet), a result
-- that is not a lunar.nn module, two parameters with one name, a pipeline
-- with no 'blocks' of DEPTH blocks, activation checkpointing without a
-- 'blocks' Sequential (or num_layers beyond its blocks). With
-- activation_checkpointing / CHECKPOINT the blocks of 'blocks' run as
-- nn.Sequential:set_activation_checkpointing says (names unchanged). Sets model.num_tokens (what the examples
-- print) from its first PositionEmbedding when the model does not set it (0:
-- unknown).
-- @param cfg a resolved config with MODEL set
-- @param g optional grid
-- @return the model (this rank's stage), not materialized, and the whole
--   model's parameter count
function setup.config_model(cfg, g)
  local model_fn = models.builder(cfg)
  local where
  if type(cfg.MODEL) == 'string' then
    where = string.format("MODEL = '%s' (lunar.models)", cfg.MODEL)
  else
    local info = debug.getinfo(model_fn, 'S')
    where = string.format('%s:%d', (info.source or '?'):gsub('^@', ''), info.linedefined or 0)
  end
  local lib, tp = nn, g and parallel.tp_context(g)
  local dom = parallel.domain_context(cfg, g)
  if dom then lib = dom:layers(nn, where) end    -- each image sharded over the domain group
  if tp then
    if g.sequence_parallel then
      error(string.format("%s: config key 'MODEL' (a model defined in the config) with parallel.sequence_parallel: " ..
        'its containers (Residual, Sequential) run on whole token sequences; set sequence_parallel = false or ' ..
        'use the built-in ViT (MODEL = nil)', where), 0)
    end
    -- tensor parallelism: the layers with a parallel form (Attention, MLP, Block) are built
    -- split across the tensor group; every other layer is replicated
    lib = setmetatable({}, {__index = nn})
    local function with_tp(o)
      local c = {}
      for k, v in pairs(o or {}) do c[k] = v end
      c.tp = c.tp or tp
      return c
    end
    function lib.Attention(dim, heads, o) return nn.Attention(dim, heads, with_tp(o)) end
    function lib.MLP(dim, hidden, o) return nn.MLP(dim, hidden, with_tp(o)) end
    function lib.Block(o) return nn.Block(with_tp(o)) end
  end
  local function build()
    local m = model_fn(cfg, lib)
    if not nn.is_module(m) then
      local what = type(m) == 'table' and (m.__name and ('a ' .. tostring(m.__name) .. ' class, not an instance')
        or 'a table that is not a module') or type(m)
      error(string.format("%s: config key 'MODEL' must return a lunar.nn module (e.g. nn.Sequential{...}), got %s",
        where, what), 0)
    end
    return m
  end
  local m = build()
  if g and g.pp_size > 1 and m.__name ~= 'Sequential' then
    error(string.format("%s: config key 'MODEL': pipeline parallelism (parallel.pipeline = %d) needs a " ..
      "nn.Sequential with a child 'blocks', got a %s", where, g.pp_size, tostring(m.__name)), 0)
  end
  local stage = g and g.zero and g.zero.stage or 0
  if stage >= 1 and not (m.grad_group_order and (stage == 1 or m.zero_units)) then
    -- lunar.parallel.zero shards by the model's gradient groups (and at stages 2, 3 gathers / reduces by its units)
    error(string.format("%s: config key 'MODEL': parallel.zero (stage %d) shards by the model's gradient groups" ..
      '%s, which a nn.Sequential reports; got a %s', where, stage, stage >= 2 and ' and units' or '',
      tostring(m.__name)), 0)
  end
  local seen = {}
  for _, p in ipairs(m:parameters()) do
    if seen[p.name] then
      error(string.format("%s: the model of config key 'MODEL' has two parameters named '%s' (name the " ..
        "children apart: {name, module})", where, p.name), 0)
    end
    seen[p.name] = true
  end
  local tokens = m.num_tokens
  if tokens == nil then
    tokens = 0
    m:apply(function(c) if tokens == 0 and c.__name == 'PositionEmbedding' then tokens = c.num_tokens end end)
  end
  local full_count = m:num_parameters()
  if g and g.pp_size > 1 then
    local where_key = where .. ": config key 'MODEL'"
    m = m:pipeline_stage(g.stage, cfg.DEPTH, where_key)
    -- the activations between stages: the shape the children before 'blocks' give one
    -- image (a fresh copy of them, run once in evaluation mode); blocks keep it
    local pre = build():pipeline_stage({first_block = 0, last_block = -1, is_first = true, is_last = false},
      cfg.DEPTH, where_key)
    nn.materialize(pre, 0):evaluate()
    local img = {1, cfg.IN_CHANS}
    for _ = 1, cfg.IMG_DIMS do img[#img + 1] = cfg.IMG_SIZE end
    local x = lunar.zeros(img)
    local h, c = pre:forward(x)
    local hs = h:shape()
    c:free(); if h ~= x then h:free() end; x:free()
    function m.hidden_shape(_, batch)
      local s = {batch}
      for i = 2, #hs do s[i] = hs[i] end
      return s
    end
  end
  -- activation checkpointing (the key, or CHECKPOINT): the blocks of the model's child 'blocks' (this stage's)
  local ac = models.activation_checkpointing(cfg)
  if ac and ac.granularity == 'full' then
    local blocks
    for _, c in ipairs(m._children) do if c.name == 'blocks' then blocks = c.module end end
    if not blocks or blocks.__name ~= 'Sequential' then
      error(string.format("%s: config key 'MODEL': activation_checkpointing (or CHECKPOINT) applies to the " ..
        "model's child 'blocks', a nn.Sequential of blocks; this model has %s (wrap modules in nn.Checkpoint " ..
        'yourself instead)', where, blocks and ("a 'blocks' that is a " .. tostring(blocks.__name)) or
        "no child named 'blocks'"), 0)
    end
    blocks:set_activation_checkpointing(ac, where .. ": config key 'MODEL'")
  end
  m.num_tokens = tokens
  m.domain = dom
  return m, full_count
end

--- Builds the run; see the module doc.
function setup.from_config(cfg, overrides, opts)
  opts = opts or {}
  if type(cfg) ~= 'table' then
    cfg = parallel.same_on_every_rank(config.load, cfg, overrides or {})
  elseif overrides ~= nil then
    error('setup.from_config: overrides go with a config path, not with a resolved config table', 2)
  end
  parallel.same_on_every_rank(config.check_machine, cfg)
  -- MEMORY_BUDGET: the estimate of the most loaded rank against it, before anything is allocated
  parallel.same_on_every_rank(require('lunar.memory').check_budget, cfg,
    {world = (opts.world or lunar.comm.world()):size()})
  if cfg.NUM_THREADS and cfg.NUM_THREADS > 0 then lunar.set_num_threads(cfg.NUM_THREADS) end
  local run = {cfg = cfg}
  local g = opts.grid
  if g == nil then g = parallel.initialize(cfg, opts.world, {quiet = opts.quiet}) end
  g = g or nil
  run.grid = g
  local dp_rank, dp_size = g and g.dp_rank or 0, g and g.dp_size or 1

  if opts.loaders ~= false then
    local dom = parallel.domain_context(cfg, g)
    local train_ds, test_ds, slabbed = data.datasets(cfg, dom)   -- synthetic data: this domain rank's slab only
    run.train_loader = data.loader(train_ds, cfg, {train = true, rank = dp_rank, num_shards = dp_size})
    run.test_loader = data.loader(test_ds, cfg, {train = false, batch_size = 500, rank = dp_rank,
      num_shards = dp_size})
    if dom and not slabbed then     -- whole images read from files: cut to this domain rank's slab
      run.train_loader = parallel.domain_loader(run.train_loader, dom)
      run.test_loader = parallel.domain_loader(run.test_loader, dom)
    end
    run.batches_per_epoch = run.train_loader:num_batches()
    run.max_steps = setup.max_steps(cfg, run.batches_per_epoch)
    run.lr_scheduler = setup.lr_schedule(cfg, run.batches_per_epoch)
  end

  local model_fn = models.builder(cfg)
  if model_fn then
    -- models as code: the config's MODEL function (or MODEL = 'hybrid_vit') builds it
    local m, full_count = parallel.same_on_every_rank(setup.config_model, cfg, g)
    local mopts = {init = cfg.INIT, precision = cfg.precision}
    if g and g.zero.stage == 3 and (g.domain_size or 1) > 1 and (cfg.PRETRAINED or '') == '' then
      -- ZeRO-3 x domain: laid out without storage, each shard drawn by zero.new (no forward runs before it:
      -- the FLOPs below are counted by formula), so no rank holds the whole model
      run.model = parallel.zero.materialize_deferred(m, opts.seed or cfg.SEED, mopts)
    else
      run.model = nn.materialize(m, opts.seed or cfg.SEED, mopts)
    end
    run.num_params = full_count      -- the whole model's (a pipeline stage holds a part)
    -- training FLOPs of one image, counted by one forward (lunar.nn.flops): of the model when this
    -- rank holds it whole, else of this rank's part, summed over the pipeline x tensor group
    local img = {cfg.IN_CHANS}
    for _ = 1, cfg.IMG_DIMS or 2 do img[#img + 1] = cfg.IMG_SIZE end
    if not g or (g.pp_size == 1 and g.tp_size == 1 and (g.domain_size or 1) == 1) then
      run.flops_per_image = nn.flops.train_flops_per_image(run.model, img)
    elseif (g.domain_size or 1) > 1 then
      -- domain parallel: no rank runs a whole image, so the count is by formula, the GEMMs lunar.nn.flops
      -- counts on one rank: 6 x each GEMM weight (>= 2-D parameters but the position table) per token, the
      -- head's ('head.*', after the pooling) once per image, and attention's 12 * depth * tokens^2 * width
      local L, per_token, per_image = run.model.num_tokens, 0, 0
      for _, p in ipairs(run.model:parameters()) do
        if #p.shape >= 2 and not p.name:find('pos_embed', 1, true) then
          local n = 1
          for _, d in ipairs(p.shape) do n = n * d end
          if p.name:find('^head%.') then per_image = per_image + n else per_token = per_token + n end
        end
      end
      run.flops_per_image = 6 * per_token * L + 6 * per_image + 12 * cfg.DEPTH * L * L * cfg.HIDDEN_SIZE
    else
      run.flops_per_image = nn.flops.train_flops_per_image_parallel(run.model, img, g)
    end
  else
    local mopts = {init = cfg.INIT, precision = cfg.precision}
    if g and g.zero.stage == 3 and (cfg.PRETRAINED or '') == '' then
      -- ZeRO-3: no rank holds the whole model, not even at init (zero.new draws each unit's shard)
      run.model = parallel.zero.materialize_deferred(parallel.vit(cfg, g), opts.seed or cfg.SEED, mopts)
    else
      run.model = nn.materialize(parallel.vit(cfg, g), opts.seed or cfg.SEED, mopts)
    end
    run.num_params = models.vit(cfg):num_parameters()     -- the whole model's (not allocated)
    run.flops_per_image = models.vit_train_flops_per_image(cfg, run.num_params)
  end
  if cfg.PRETRAINED and cfg.PRETRAINED ~= '' then
    -- fine-tuning: timm weights (head of another class count kept, pos_embed resampled to this grid)
    local ok, err = pcall(require('lunar.timm').load_pretrained, run.model, cfg.PRETRAINED)
    if not ok then lunar.error('config key PRETRAINED: ' .. tostring(err)) end
  end
  run.global_batch = cfg.BATCH_SIZE * dp_size
  run.criterion = nn.CrossEntropy{label_smoothing = cfg.LABEL_SMOOTHING}
  if g and g.zero.stage >= 1 then
    -- sharded data parallelism: the optimizer steps this rank's shard (lunar.parallel.zero)
    run.zero = parallel.zero.new{model = run.model, grid = g, config = g.zero,
      bucket_size = opts.engine and opts.engine.bucket_size,
      make_optimizer = function(pieces) return setup.optimizer(cfg, pieces) end}
    run.optimizer = run.zero.optimizer
  else
    run.optimizer = setup.optimizer(cfg, run.model:parameters())
  end
  local args = {model = run.model, optimizer = run.optimizer, criterion = run.criterion,
    lr_scheduler = opts.engine_schedule ~= false and run.lr_scheduler or nil, clip_grad_norm = cfg.clip_grad_norm,
    gradient_accumulation = cfg.gradient_accumulation, grid = g, zero = run.zero,
    num_micro_batches = cfg.NUM_MICRO_BATCHES, eval_hflip = cfg.EVAL_HFLIP, eval_shift = cfg.EVAL_SHIFT,
    eval_fill = data.black_pixel(cfg)}
  for k, v in pairs(opts.engine or {}) do args[k] = v end
  run.engine = engine_mod.initialize(args)
  return run
end

return setup
