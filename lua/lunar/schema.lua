--- Every Lunar config key: its type, default and a one-line doc.
--
-- The vocabulary is Colossal-AI's: hyperparameters in CAPS (`BATCH_SIZE` per
-- data-parallel rank, `LEARNING_RATE`, `NUM_EPOCHS`, ...) and lowercase feature
-- settings read by the framework (`parallel`, `gradient_accumulation`,
-- `clip_grad_norm`, `precision`, `device`).
--
-- An entry is a table with fields:
--   type      'integer' | 'number' | 'string' | 'boolean' | 'table' | 'function' |
--             'size' (bytes: an integer, or a string like '2GiB', normalized to the integer)
--   default   the default value (nil: the key is optional and may stay unset;
--             for a dict the default is built from its fields' defaults)
--   doc       one line of documentation
--   enum      optional list of the allowed values
--   min, max  optional inclusive bounds (numbers; for a list, of every item);
--             min_exclusive / max_exclusive make a bound strict
--   fields    for a dict ('table' with named fields): name -> entry
--   items     for a list ('table' of values): the type of every item
--   check     optional function(value) -> nil or a text saying what is wrong
--   parse     optional function(value) -> normalized value, or nil and a text
--             saying what is wrong (a key of several accepted forms; type then
--             only documents them); nil stays nil (the default)
--   derive    optional function(cfg) -> value: config.load sets the key to it
--             when still unset after the files and the command line, and
--             requires a value that was set to equal it (derive_doc says how
--             it is computed)
--
-- This module is data plus accessors; config.lua does the loading and checking.
-- @module lunar.schema
local schema = {}

local function E(t) return t end

--- Top-level entries, in documentation order (`schema.keys()` sorts them).
local TOP = {
  -- model (ViT)
  { 'MODEL', E{ type = 'string|function', default = nil,
      check = function(v)
        if type(v) == 'string' and v ~= 'vit' and v ~= 'hybrid_vit' then
          return "must be 'vit', 'hybrid_vit' or a function(cfg, nn)"
        end
      end,
      doc = "the model: 'vit' (nil: the built-in ViT of the keys below), 'hybrid_vit' (PhysicsNeMo's HybridViT: " ..
        'conv patch embedding + LayerNorm, no class token, mean pool; lunar.models.hybrid_vit) or models as code: ' ..
        'function(cfg, nn) returning a lunar.nn module (e.g. nn.Sequential{...}, see configs/examples/). Data, ' ..
        "tensor (its Attention, MLP and Block split, other layers replicated), pipeline parallel (stages split its " ..
        "child 'blocks') and domain parallel; not sequence parallel yet" } },
  { 'IMG_SIZE', E{ type = 'integer', default = 28, min = 1,
      doc = 'input image side in pixels (square, or cubic when IMG_DIMS = 3)' } },
  { 'IN_CHANS', E{ type = 'integer', default = 1, min = 1,
      doc = 'input channels (1 for Fashion-MNIST, 3 for CIFAR-10)' } },
  { 'PATCH_SIZE', E{ type = 'integer', default = 4, min = 1,
      doc = 'patch side in pixels; IMG_SIZE must be a multiple of it' } },
  { 'HIDDEN_SIZE', E{ type = 'integer', default = 192, min = 1,
      doc = 'transformer width (embedding dimension)' } },
  { 'DEPTH', E{ type = 'integer', default = 6, min = 1,
      doc = 'number of transformer blocks' } },
  { 'NUM_HEADS', E{ type = 'integer', default = 3, min = 1,
      doc = 'attention heads per block; HIDDEN_SIZE must be a multiple of it' } },
  { 'MLP_RATIO', E{ type = 'number', default = 4, min = 0, min_exclusive = true,
      doc = 'MLP hidden size as a multiple of HIDDEN_SIZE' } },
  { 'NUM_CLASSES', E{ type = 'integer', default = 10, min = 1,
      doc = 'classifier outputs' } },
  { 'DROPOUT', E{ type = 'number', default = 0.0, min = 0, max = 1, max_exclusive = true,
      doc = 'dropout probability in the MLP and after attention' } },
  { 'LABEL_SMOOTHING', E{ type = 'number', default = 0.0, min = 0, max = 1,
      doc = 'label smoothing of the cross-entropy loss' } },
  { 'IMG_DIMS', E{ type = 'integer', default = 2, enum = { 2, 3 },
      doc = 'spatial dimensions of an image: 2 (images) or 3 (volumes)' } },
  { 'SEQ_LENGTH', E{ type = 'integer', default = nil, min = 1,
      derive = function(c)
        local n = c.IMG_SIZE // c.PATCH_SIZE
        local s = 1
        for _ = 1, c.IMG_DIMS do s = s * n end
        return s + 1
      end,
      derive_doc = '(IMG_SIZE // PATCH_SIZE)^IMG_DIMS + 1',
      doc = 'tokens per image incl. the class token: (IMG_SIZE // PATCH_SIZE)^IMG_DIMS + 1 (derived when unset)' } },

  -- optimization
  { 'BATCH_SIZE', E{ type = 'integer', default = 128, min = 1,
      doc = 'samples per step per data-parallel rank (global batch = BATCH_SIZE * data)' } },
  { 'LEARNING_RATE', E{ type = 'number', default = 2e-3, min = 0,
      doc = 'peak learning rate' } },
  { 'WEIGHT_DECAY', E{ type = 'number', default = 0.05, min = 0,
      doc = 'decoupled weight decay (AdamW) or L2 penalty (SGD)' } },
  { 'NUM_EPOCHS', E{ type = 'integer', default = 1, min = 0,
      doc = 'training epochs' } },
  { 'WARMUP_EPOCHS', E{ type = 'number', default = 0.1, min = 0,
      doc = 'linear warmup length in epochs (may be fractional)' } },
  { 'MIN_LR', E{ type = 'number', default = 0.0, min = 0,
      doc = 'learning rate at the end of the cosine decay' } },
  { 'OPTIMIZER', E{ type = 'string', default = 'adamw', enum = { 'adamw', 'sgd' },
      doc = 'optimizer' } },
  { 'BETA1', E{ type = 'number', default = 0.9, min = 0, max = 1, max_exclusive = true,
      doc = 'AdamW first-moment decay' } },
  { 'BETA2', E{ type = 'number', default = 0.999, min = 0, max = 1, max_exclusive = true,
      doc = 'AdamW second-moment decay' } },
  { 'EPS', E{ type = 'number', default = 1e-8, min = 0,
      doc = 'AdamW denominator epsilon' } },
  { 'MOMENTUM', E{ type = 'number', default = 0.9, min = 0, max = 1,
      doc = 'SGD momentum' } },
  { 'NUM_MICRO_BATCHES', E{ type = 'integer', default = 1, min = 1,
      doc = 'micro-batches per step in the pipeline schedule (BATCH_SIZE is split into them)' } },
  { 'gradient_accumulation', E{ type = 'integer', default = 1, min = 1,
      doc = 'batches whose gradients are averaged into one optimizer step (a step takes this many batches)' } },
  { 'clip_grad_norm', E{ type = 'number', default = 0.0, min = 0,
      doc = 'clip the global gradient norm to this value (0 = off)' } },
  { 'precision', E{ type = 'string', default = 'fp32', enum = { 'fp32', 'bf16' },
      doc = "compute precision: 'fp32', or 'bf16' mixed precision: bf16 GEMMs (fp32 accumulation) on bf16 " ..
        "working weights, bf16 activations inside each block (LayerNorm outputs, qkv, attention, MLP hidden); " ..
        "fp32 master weights, gradients, optimizer state, residual stream, LayerNorm/softmax statistics and loss. bf16 needs avx512_bf16 on the CPU (Zen 4+, Sapphire Rapids+) " ..
        "or CUDA compute capability 8.0+" } },

  { 'activation_checkpointing', E{ type = 'table',
      doc = "recompute activations in backward instead of keeping them (NeMo's activations_checkpoint_granularity, " ..
        "_method, _num_layers); gradients are bitwise those without it (dropout masks replayed)",
      fields = {
        { 'granularity', E{ type = 'string', default = nil, enum = { 'full', 'selective' },
            doc = "nil = off; 'full': keep only the input of each checkpointed segment of blocks and replay " ..
              "its forward in backward; 'selective': recompute only the attention core (softmax), which " ..
              "Lunar's attention kernel always does (it keeps the log-sum-exp per row, never the N x N " ..
              "probabilities), so it stores what nil stores; method and num_layers apply to 'full'" } },
        { 'method', E{ type = 'string', default = 'uniform', enum = { 'uniform', 'block' },
            doc = "'uniform': each pipeline stage's blocks in groups of num_layers, each group's input kept; " ..
              "'block': only the first num_layers blocks of each stage checkpointed (each alone)" } },
        { 'num_layers', E{ type = 'integer', default = 1, min = 1,
            doc = 'blocks per group (uniform) or blocks checkpointed per pipeline stage (block); at most the ' ..
              'blocks of the smallest stage' } },
        { 'blocks', E{ type = 'table', items = 'boolean', default = nil,
            doc = 'per block (a layerwise strategy, Galvatron\'s per-layer checkpointing): one boolean per block, ' ..
              'blocks[i + 1] = true checkpoints block i alone (granularity full implied; method and num_layers ' ..
              'ignored); build it with a loop over DEPTH in the config' } },
      } } },
  { 'CHECKPOINT', E{ type = 'boolean', default = false,
      doc = "Colossal-AI's switch: true = activation_checkpointing granularity 'full' (with its method and " ..
        "num_layers; by default every block)" } },

  { 'MEMORY_BUDGET', E{ type = 'size', default = nil, min = 0,
      doc = "bytes per rank a run may use (an integer or a size like '2GiB'; nil or 0 = no limit): a run whose " ..
        "estimate (lunar.memory: parameters, gradients, optimizer state, peak activations, batch; printed by " ..
        "`lunar config show`) exceeds it stops before allocating, naming what to change" } },

  { 'INIT', E{ type = 'string', default = 'timm', enum = { 'timm', 'pytorch' },
      doc = "weight init: 'timm' (Linear trunc_normal std .02, zero bias) or 'pytorch' (module defaults: U(+-1/sqrt(fan_in)))" } },

  -- run
  { 'SEED', E{ type = 'integer', default = 42,
      doc = 'seed of parameter init, data shuffling and dropout' } },
  { 'MAX_STEPS', E{ type = 'integer', default = 0, min = 0,
      doc = 'stop after this many optimizer steps, each gradient_accumulation batches (0 = NUM_EPOCHS only); ' ..
        'the LR schedule spans NUM_EPOCHS regardless' } },
  { 'LOG_EVERY', E{ type = 'integer', default = 50, min = 1,
      doc = 'print the loss line every N optimizer steps' } },
  { 'METRICS_FILE', E{ type = 'string', default = 'metrics.jsonl',
      doc = "JSON-lines file of the metrics ('' = none): one line per optimizer step (step = optimizer " ..
        "steps done, loss = the mean over its batches, lr, images_per_s) and one per evaluation" } },
  { 'TENSORBOARD_DIR', E{ type = 'string', default = '',
      doc = "directory of TensorBoard event files ('' = none): rank 0 appends, per optimizer step, train/loss, " ..
        "train/lr, train/images_per_s and memory/peak_bytes (peak bytes in tensors), and per evaluation " ..
        "test/accuracy and test/loss, with the values of METRICS_FILE (lunar.tensorboard)" } },
  { 'PLOT_FILE', E{ type = 'string', default = '',
      doc = "PNG of the loss, learning-rate and test-accuracy curves of METRICS_FILE, drawn at the end of the " ..
        "run by `lunar plot` (gnuplot; '' = none)" } },
  { 'EVAL_EVERY_EPOCH', E{ type = 'boolean', default = true,
      doc = 'evaluate on the test split after every epoch (every EVAL_INTERVAL-th; false: never)' } },
  { 'EVAL_HFLIP', E{ type = 'boolean', default = false,
      doc = "evaluation's logits: the mean of each test image's and of its mirror's (test-time " ..
        'augmentation with the horizontal flip; two forwards per batch)' } },
  { 'EVAL_SHIFT', E{ type = 'integer', default = 0, min = 0,
      doc = "evaluation's logits: the mean also over each test image (and its mirror with EVAL_HFLIP) shifted " ..
        'by this many pixels up, down, left and right, the uncovered border black as the training crop pads ' ..
        '(test-time augmentation; 5 or 10 forwards per batch; 0: off)' } },
  { 'EVAL_INTERVAL', E{ type = 'integer', default = 1, min = 1,
      doc = 'with EVAL_EVERY_EPOCH: evaluate after every N-th epoch and after the last one ' ..
        "(Colossal-AI's test_interval; N >= NUM_EPOCHS: once, at the end)" } },
  { 'device', E{ type = 'string', default = 'cpu',
      check = function(v)
        if v == 'cpu' or v == 'cuda' or v:match('^cuda:%d+$') then return nil end
        return "must be 'cpu', 'cuda' or 'cuda:N'"
      end,
      doc = "where tensors live: 'cpu', 'cuda' (the rank's local GPU) or 'cuda:N'" } },
  { 'NUM_THREADS', E{ type = 'integer', default = 0, min = 0,
      doc = 'CPU threads per rank (0 = OpenMP default)' } },

  -- data
  { 'DATASET', E{ type = 'string', default = 'fashion_mnist',
      enum = { 'fashion_mnist', 'cifar10', 'synthetic', 'image_folder', 'imagenet_zip' },
      doc = 'training data' } },
  { 'DATA_DIR', E{ type = 'string', default = '/usr/share/datasets/fashion-mnist',
      doc = 'directory holding the dataset files' } },
  { 'NUM_SAMPLES', E{ type = 'integer', default = 1024, min = 1,
      doc = 'size of the synthetic dataset' } },
  { 'PREFETCH', E{ type = 'boolean', default = true,
      doc = 'load the next batch on a background thread' } },
  { 'PREFETCH_BATCHES', E{ type = 'integer', default = 2, min = 1, max = 64,
      doc = 'batches the PREFETCH thread prepares ahead (one batch buffer each)' } },
  { 'DATA_THREADS', E{ type = 'integer', default = 1, min = 1, max = 256,
      doc = "threads per rank decoding and augmenting an image dataset's batch ('image_folder')" } },
  { 'DATA_MEAN', E{ type = 'table', items = 'number', default = nil,
      doc = "per-channel mean of Normalize (unset: the dataset's; 'image_folder': ImageNet's " ..
        "{0.485, 0.456, 0.406})" } },
  { 'DATA_STD', E{ type = 'table', items = 'number', default = nil, min = 0, min_exclusive = true,
      doc = "per-channel std of Normalize (unset: the dataset's; 'image_folder': ImageNet's " ..
        "{0.229, 0.224, 0.225})" } },
  { 'AUG_SCALE', E{ type = 'table', items = 'number', default = nil, min = 0,
      doc = "'image_folder'/'imagenet_zip' training: RandomResizedCrop's {min, max} area fraction " ..
        '(unset: {0.08, 1}, timm)' } },
  { 'SHIFTED_PATCHES', E{ type = 'integer', default = 0, min = 0,
      doc = "MODEL = 'hybrid_vit': Shifted Patch Tokenization's input (Lee et al. 2021): the image and four " ..
        'copies shifted diagonally by this many pixels, stacked on the channels before the patch embedding ' ..
        '(nn.ShiftedPatches; the paper: PATCH_SIZE // 2; 0: off)' } },
  { 'STEM_CHANNELS', E{ type = 'integer', default = 0, min = 0,
      doc = "MODEL = 'hybrid_vit': a convolutional stem before the patch embedding (Xiao et al. 2021, " ..
        "'Early convolutions help transformers see better'): a 3 x 3 convolution (stride 1, padding 1) to this " ..
        'many channels and GELU, 2D only (0: off)' } },
  { 'AUG_HFLIP', E{ type = 'number', default = nil, min = 0, max = 1,
      doc = "training: probability of the horizontal flip (unset: 0.5 for 'image_folder'/'imagenet_zip', " ..
        "none for the in-memory datasets)" } },
  { 'AUG_CROP_PADDING', E{ type = 'integer', default = 0, min = 0,
      doc = "in-memory image datasets (fashion_mnist, cifar10, synthetic) training: torchvision's " ..
        'RandomCrop(IMG_SIZE, padding=N) of zero pixels, keyed by Philox like the data order (0: none)' } },
  { 'CROP_PCT', E{ type = 'number', default = 0.875, min = 0, max = 1, min_exclusive = true,
      doc = "'image_folder' evaluation: resize the shorter side to floor(IMG_SIZE / CROP_PCT), then " ..
        'center-crop IMG_SIZE (timm)' } },
  { 'BAD_IMAGE', E{ type = 'string', default = 'skip', enum = { 'skip', 'error' },
      doc = "an image file that does not decode: 'skip' (warn once naming it, count it, use the next " ..
        "good file with its own label) or 'error' (stop naming it)" } },

  -- image-size benchmark (examples/benchmark_image_sizes.lua)
  { 'SWEEP_START', E{ type = 'integer', default = 32, min = 1,
      doc = 'image-size benchmark: first image side in pixels (a multiple of PATCH_SIZE)' } },
  { 'SWEEP_STOP', E{ type = 'integer', default = 128, min = 1,
      doc = 'image-size benchmark: last image side in pixels (included when the steps reach it)' } },
  { 'SWEEP_STEP', E{ type = 'integer', default = 32, min = 1,
      doc = 'image-size benchmark: increment of the image side (a multiple of PATCH_SIZE)' } },
  { 'BENCH_STEPS', E{ type = 'integer', default = 5, min = 1,
      doc = 'image-size benchmark: timed training steps per image size' } },
  { 'BENCH_WARMUP', E{ type = 'integer', default = 2, min = 0,
      doc = 'image-size benchmark: untimed warm-up steps per image size' } },
  { 'BENCH_CSV', E{ type = 'string', default = 'benchmark_image_sizes.csv',
      doc = "image-size benchmark: CSV file of the results table ('' = none)" } },

  -- checkpoints
  { 'CHECKPOINT_DIR', E{ type = 'string', default = '',
      doc = "directory of sharded checkpoints ('' = no checkpoints)" } },
  { 'SAVE_EVERY', E{ type = 'integer', default = 0, min = 0,
      doc = 'save a checkpoint every N optimizer steps, as <CHECKPOINT_DIR>/step_<N> (0 = only at the end, if CHECKPOINT_DIR is set)' } },
  { 'KEEP_CHECKPOINTS', E{ type = 'integer', default = 0, min = 0,
      doc = 'keep only the newest N complete checkpoints in CHECKPOINT_DIR (0 = keep all)' } },
  { 'PRETRAINED', E{ type = 'string', default = '',
      doc = "timm ViT weights (safetensors, timm names) loaded into the model after its init ('' = none; " ..
        "lunar.timm.load_pretrained): a head of another class count is kept at its init, a pos_embed of " ..
        "another square patch grid (pretrained at another IMG_SIZE) is resampled bicubically as timm's " ..
        "resample_abs_pos_embed; RESUME's checkpoint, when one is loaded, replaces these weights" } },
  { 'RESUME', E{ type = 'string', default = '',
      doc = "checkpoint to resume from: '' = start fresh, 'auto' = the newest complete one in CHECKPOINT_DIR (fresh if none), else a step_<N> directory" } },

  -- parallelism (Colossal-AI's parallel dict)
  { 'parallel', E{ type = 'table',
      doc = 'the parallel layout: world size = data * pipeline * tensor * domain',
      fields = {
        { 'data', E{ type = 'integer', default = 0, min = 0,
            doc = 'data-parallel size (0 = derived: world size / (pipeline * tensor))' } },
        { 'pipeline', E{ type = 'integer', default = 1, min = 1,
            doc = 'pipeline-parallel size (number of stages)' } },
        { 'tensor', E{ type = 'table',
            doc = 'tensor parallelism',
            fields = {
              { 'mode', E{ type = 'string', default = 'none', enum = { '1d', '2d', '2.5d', '3d', 'none' },
                  doc = "tensor-parallel mode: '1d' (Megatron column/row), '2d' (Optimus/SUMMA, size q*q), " ..
                    "'2.5d' (Tesseract, size depth*q*q), '3d' (size q*q*q) or 'none' (nil also means none)" } },
              { 'size', E{ type = 'integer', default = 1, min = 1,
                  doc = 'tensor-parallel size' } },
              { 'depth', E{ type = 'integer', default = nil, min = 1,
                  doc = "tensor mode '2.5d': the number of q x q layers (size = depth * q * q)" } },
            } } },
        { 'sequence_parallel', E{ type = 'boolean', default = false,
            doc = 'shard LayerNorm/dropout activations along the sequence (needs tensor mode 1d)' } },
        { 'domain', E{ type = 'integer|table', default = nil,
            check = function(v)
              if type(v) == 'number' then
                if v < 1 then return 'must be >= 1' end
                return nil
              end
              for k in pairs(v) do
                if k ~= 'size' and k ~= 'attention' then return "has an unknown field '" .. tostring(k) ..
                  "' (fields: size, attention)" end
              end
              if math.type(v.size) ~= 'integer' or v.size < 1 then return '.size must be an integer >= 1' end
              if v.attention ~= nil and v.attention ~= 'ring' and v.attention ~= 'allgather' then
                return ".attention must be 'ring' or 'allgather'"
              end
            end,
            doc = "domain parallelism (PhysicsNeMo's domain_size): each image sharded over N ranks by rows " ..
              "(3D: planes) of patches (nil = 1: none); N or {size = N, attention = 'ring' | 'allgather'} (default ring); " ..
              "data = world / (domain x pipeline x tensor); MODEL = 'hybrid_vit' or a MODEL function; composes " ..
              'with data parallelism and ZeRO (parallel.zero, every stage and group_size: each domain coordinate ' ..
              'shards over its data-parallel group), not tensor or pipeline (lunar.parallel.domain)' } },
        { 'pipeline_schedule', E{ type = 'string', default = '1f1b', enum = { 'gpipe', '1f1b' },
            doc = 'pipeline schedule' } },
        { 'pipeline_split', E{ type = 'table', items = 'integer', default = nil, min = 0,
            doc = 'blocks per pipeline stage, e.g. {3, 3} (nil = even split)' } },
        { 'block_tensor', E{ type = 'table', items = 'integer', default = nil, min = 1,
            doc = 'per-block tensor-parallel sizes (a layerwise strategy, Galvatron\'s): one power of two per ' ..
              'block over a base layout of data parallelism only; block i runs on t_i ranks (block_tensor_consec) with ' ..
              'their samples gathered (lunar.parallel.layerwise); nil = every block the tensor size above' } },
        { 'zero', E{ type = 'stage|name|table', default = nil,
            parse = function(v) return require('lunar.parallel.zero').parse(v) end,
            doc = "sharded data parallelism (lunar.parallel.zero): a ZeRO stage 0-3 or Megatron-FSDP's name " ..
              "('no_shard', 'optim', 'optim_grads', 'optim_grads_params'), or {stage =, group_size =} " ..
              '(hybrid: shard within runs of group_size data-parallel ranks); read as {stage =, group_size =}' } },
        { 'block_tensor_consec', E{ type = 'table', items = 'boolean', default = nil,
            doc = 'per-block tensor placement (Galvatron\'s tp_consec), with block_tensor: one boolean per block, ' ..
              'true = the block\'s tensor group on consecutive ranks, false = strided ranks (r mod world/t, ' ..
              '+ world/t, ...); nil = all consecutive (lunar.parallel.layerwise)' } },
      } } },
}

--- Checks across keys, run on the resolved config: each is a function(cfg)
-- returning nil or {key, text} (the key blamed and what is wrong with it).
schema.checks = {
  function(c)
    if c.PLOT_FILE ~= '' and c.METRICS_FILE == '' then
      return { 'PLOT_FILE', string.format("('%s') needs METRICS_FILE: the curves are drawn from it", c.PLOT_FILE) }
    end
  end,
  function(c)
    if c.IMG_SIZE % c.PATCH_SIZE ~= 0 then
      return { 'IMG_SIZE', string.format('(%d) must be a multiple of PATCH_SIZE (%d)', c.IMG_SIZE, c.PATCH_SIZE) }
    end
  end,
  function(c)   -- activation checkpointing: CHECKPOINT agrees, num_layers fits every pipeline stage
    local ac = c.activation_checkpointing
    if type(ac) ~= 'table' then return nil end
    if c.CHECKPOINT and ac.granularity ~= nil and ac.granularity ~= 'full' then
      return { 'CHECKPOINT', string.format("is true (granularity 'full'), but activation_checkpointing.granularity " ..
        "is '%s'; set one of them", tostring(ac.granularity)) }
    end
    if ac.blocks ~= nil then
      if ac.granularity == 'selective' then
        return { 'activation_checkpointing.blocks', "lists blocks to checkpoint in full, but granularity is " ..
          "'selective'; unset one of them" }
      end
      if #ac.blocks ~= c.DEPTH then
        return { 'activation_checkpointing.blocks', string.format('has %d entries; it needs one boolean per block ' ..
          '(DEPTH %d)', #ac.blocks, c.DEPTH) }
      end
      if c.MODEL ~= nil and c.MODEL ~= 'vit' then
        return { 'activation_checkpointing.blocks', "applies to the built-in ViT's blocks, not yet to a MODEL" }
      end
      return nil                                                          -- method and num_layers ignored
    end
    if ac.granularity ~= 'full' and not c.CHECKPOINT then return nil end   -- num_layers counts 'full' blocks
    if c.MODEL ~= nil and c.MODEL ~= 'vit' then return nil end   -- a MODEL's 'blocks': setup.config_model checks num_layers on them
    local par = type(c.parallel) == 'table' and c.parallel or {}
    local pp, split = par.pipeline or 1, par.pipeline_split
    if split and #split ~= pp then return nil end      -- the grid's check names that
    local parts = require('lunar.parallel.grid').partition(c.DEPTH, pp, split)
    for s, nb in ipairs(parts) do
      if nb >= 1 and ac.num_layers > nb then
        local where = pp > 1 and string.format('pipeline stage %d of %d', s - 1, pp) or 'the model'
        return { 'activation_checkpointing.num_layers', string.format('(%d) is more than the %d blocks of %s ' ..
          '(DEPTH %d); it counts blocks per pipeline stage', ac.num_layers, nb, where, c.DEPTH) }
      end
    end
  end,
  function(c)   -- ZeRO stages 2 and 3 of a MODEL (its Sequential's units, nn.Sequential:zero_units): data x domain
    local par = type(c.parallel) == 'table' and c.parallel or {}
    local z = par.zero
    if c.MODEL ~= nil and c.MODEL ~= 'vit' and type(z) == 'table' and (z.stage or 0) >= 2 then
      local t = par.tensor
      local tp = type(t) == 'number' and t or (type(t) == 'table' and t.mode ~= 'none' and t.size) or 1
      local pp = par.pipeline or 1
      if tp > 1 or pp > 1 then
        return { 'parallel.zero', string.format('stage %d of a MODEL (models as code) composes with data and domain ' ..
          'parallelism, not yet with tensor (%d) or pipeline (%d) parallelism: use stage 1 or the built-in ViT',
          z.stage, tp, pp) }
      end
    end
  end,
  function(c)
    if c.HIDDEN_SIZE % c.NUM_HEADS ~= 0 then
      return { 'HIDDEN_SIZE', string.format('(%d) must be a multiple of NUM_HEADS (%d)', c.HIDDEN_SIZE, c.NUM_HEADS) }
    end
  end,
}

--- Turns a list of {name, entry} pairs into a map, recursively, recording each
-- entry's dotted key and, for dicts, the default built from the fields.
local function build(list, prefix)
  local map = {}
  for _, pair in ipairs(list) do
    local name, e = pair[1], pair[2]
    e.name = name
    e.key = prefix .. name
    if e.fields then
      e.fields = build(e.fields, e.key .. '.')
    end
    map[name] = e
  end
  return map
end

--- The root pseudo-entry: a dict whose fields are the top-level keys.
-- Internal and read-only: config.lua walks it. Use `schema.get` elsewhere.
schema.root = { type = 'table', key = '', name = '', fields = build(TOP, '') }

--- A deep copy of a value (tables copied recursively; no cycles expected).
-- @param v any value
-- @return the copy (v itself when not a table)
local function deep_copy(v)
  if type(v) ~= 'table' then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end
schema.deep_copy = deep_copy

--- Whether an entry is a dict (a 'table' with named fields).
-- @tparam table e an entry
-- @treturn boolean
local function is_dict(e) return e.type == 'table' and e.fields ~= nil end
schema.is_dict = is_dict

--- The default value of an entry (a fresh copy; for a dict, built from its fields).
-- @tparam table e an entry (from `schema.root` or `schema.get`)
-- @return the default (nil for an optional key)
local function default_of(e)
  if is_dict(e) then
    local t = {}
    for name, f in pairs(e.fields) do t[name] = default_of(f) end
    return t
  end
  return deep_copy(e.default)
end
schema.default_of = default_of

--- The names of a map, sorted.
-- @tparam table map name -> anything
-- @treturn {string,...}
local function sorted_names(map)
  local names = {}
  for name in pairs(map) do names[#names + 1] = name end
  table.sort(names)
  return names
end
schema.sorted_names = sorted_names

local function public(e)
  local c = {}
  for k, v in pairs(e) do c[k] = v end
  c.default = default_of(e)
  return c
end

--- The entry of one key.
-- @tparam string key a top-level key (`'BATCH_SIZE'`) or a dotted path into a
--   dict (`'parallel.tensor.mode'`)
-- @treturn table|nil a copy of the entry: key (dotted), name, type, default,
--   doc, and where present enum, min, max, min_exclusive, max_exclusive,
--   items, fields (for a dict: name -> entry), check, derive; nil when the key
--   is not in the schema
function schema.get(key)
  local e = schema.root
  for part in tostring(key):gmatch('[^.]+') do
    if not is_dict(e) then return nil end
    e = e.fields[part]
    if not e then return nil end
  end
  if e == schema.root then return nil end
  return public(e)
end

--- Every key, dicts and their nested keys included, sorted by dotted key.
-- @treturn {table,...} a list of entries as `schema.get` returns them, e.g.
--   `{key='BATCH_SIZE', type='integer', default=128, doc='...'}`,
--   `{key='parallel.tensor.mode', type='string', default='none', enum={'1d','none'}, ...}`
function schema.keys()
  local out = {}
  local function walk(e)
    for _, name in ipairs(sorted_names(e.fields)) do
      local f = e.fields[name]
      out[#out + 1] = public(f)
      if is_dict(f) then walk(f) end
    end
  end
  walk(schema.root)
  table.sort(out, function(a, b) return a.key < b.key end)
  return out
end

--- The defaults of every key, as a fresh table (dicts filled in; keys whose
-- default is nil are absent).
-- @treturn table e.g. `{BATCH_SIZE=128, ..., parallel={data=0, pipeline=1, tensor={mode='none', size=1}, ...}}`
function schema.defaults()
  return default_of(schema.root)
end

local function short(v)
  if type(v) == 'string' then return string.format('%q', v) end
  if type(v) == 'table' then return '{...}' end
  return tostring(v)
end

--- A human-readable listing of every key (for `lunar config keys`).
-- @treturn string one line per key: key, type, default, doc (and the allowed
--   values of an enum)
function schema.help()
  local lines = {}
  for _, e in ipairs(schema.keys()) do
    local ty = e.type
    if e.items then ty = ty .. ' of ' .. e.items .. 's' end
    local default = is_dict(e) and '' or short(e.default)
    local doc = e.doc
    if e.enum then
      local vals = {}
      for i, v in ipairs(e.enum) do vals[i] = short(v) end
      doc = doc .. ' (one of ' .. table.concat(vals, ', ') .. ')'
    end
    lines[#lines + 1] = string.format('%-30s %-18s %-36s %s', e.key, ty, default, doc)
  end
  return table.concat(lines, '\n') .. '\n'
end

return schema
