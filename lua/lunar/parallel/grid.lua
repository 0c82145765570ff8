--- lunar.parallel.grid: the process grid from the config's `parallel` dict
-- (Colossal-AI's dict; Megatron-LM's parallel_state rank order).
--
--   local grid = require('lunar.parallel.grid')
--   local msg = grid.validate(cfg, world_size)     nil, or what does not divide what
--   local g = grid.new(cfg [, comm])               raises error(msg, 0) on a bad layout
--   g.dp_size, g.tp_size, g.pp_size                data / tensor / pipeline parallel size
--   g.dp_rank, g.tp_rank, g.pp_rank                this rank's coordinates (0-based)
--   g.domain_size, g.domain_rank, g.domain_attention   domain parallelism (parallel.domain:
--                                                  each image sharded over domain ranks;
--                                                  lunar.parallel.domain); size 1: none
--   g.domain_group, g.grad_group                   with domain > 1: the domain group and
--                                                  domain x data, over which gradients average
--   g.dp_group, g.tp_group, g.pp_group, g.mp_group sub-communicators (lunar.comm);
--                                                  mp = tensor x pipeline (same dp rank)
--   g.stage = {index, first_block, last_block, is_first, is_last}   (blocks 0-based)
--   g.block_tensor, g.block_groups, g:grad_sync(key)   per-block tensor sizes
--                                                  (parallel.block_tensor; lunar.parallel.layerwise)
--   g.zero = {stage, group_size}                   sharded data parallelism (lunar.parallel.zero)
--   g:rank_of(pp, dp, tp), g:coords_of(rank), g:stage_of_block(i), print(g:describe())
--
-- Rank order (Megatron's: tensor innermost, then data, then pipeline), so the
-- ranks of one tensor-parallel group are neighbours (the same node):
--
--     rank = pp * (dp_size * tp_size) + dp * tp_size + tp
--
-- With domain parallelism (parallel.domain = D, data x domain only for now)
-- the domain rank sits between data and tensor, so an image's ranks are
-- neighbours: rank = pp * (dp * D * tp) + dp * (D * tp) + domain * tp + tp.
--
-- The data-parallel size is world / (pipeline * tensor * domain) unless
-- parallel.data names it (then the product must equal the world size). validate() needs no
-- communication and gives the same answer on every rank, so a bad layout is
-- found before the first collective (lunar.parallel.initialize prints it once).
local tensor_2d = require('lunar.parallel.tensor_2d')
local tensor_3d = require('lunar.parallel.tensor_3d')

local grid = {}

local Grid = {}
Grid.__index = Grid

-- The MLP hidden size the ViT builds (nn.Block: floor(dim * ratio + 0.5)).
local function mlp_hidden(cfg)
  return math.floor((cfg.HIDDEN_SIZE or 0) * (cfg.MLP_RATIO or 4) + 0.5)
end

-- Tokens per image incl. the class token (schema's SEQ_LENGTH derivation).
local function seq_length(cfg)
  if cfg.SEQ_LENGTH then return cfg.SEQ_LENGTH end
  if not (cfg.IMG_SIZE and cfg.PATCH_SIZE) then return nil end
  local n, s = cfg.IMG_SIZE // cfg.PATCH_SIZE, 1
  for _ = 1, cfg.IMG_DIMS or 2 do s = s * n end
  return s + 1
end

local function fmt_list(t)
  local parts = {}
  for i, v in ipairs(t) do parts[i] = tostring(v) end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- The domain size and attention a config asks for: parallel.domain = N or
-- {size = N, attention = 'ring' | 'allgather'} (default 1, 'ring').
function grid.requested_domain(par)
  local d = par.domain
  if type(d) == 'table' then return d.size or 1, d.attention or 'ring' end
  return d or 1, 'ring'
end

--- The sizes a config asks for, without checking them: pipeline, tensor
-- size, tensor mode, data (0 = derived), sequence_parallel, schedule, split, domain.
local function requested(cfg)
  local par = cfg.parallel or {}
  local dom, dom_attn = grid.requested_domain(par)
  local tensor = par.tensor
  local mode, tsize, tdepth = 'none', 1, nil
  if type(tensor) == 'table' then
    mode = tensor.mode == nil and 'none' or tensor.mode
    tsize, tdepth = tensor.size or 1, tensor.depth
  elseif type(tensor) == 'number' then          -- parallel = {tensor = 2}: Colossal-AI shorthand for 1d
    mode, tsize = tensor > 1 and '1d' or 'none', tensor
  end
  return {
    pp = par.pipeline or 1, tp = tsize, mode = mode, depth = tdepth, dp = par.data or 0,
    sp = par.sequence_parallel and true or false,
    schedule = par.pipeline_schedule or '1f1b', split = par.pipeline_split, domain = dom, domain_attention = dom_attn,
  }
end

--- Blocks per pipeline stage: the explicit split, or an even split of depth
-- over pp stages (the first depth % pp stages get one more block).
-- @param depth integer number of blocks
-- @param pp integer number of stages
-- @param split optional list of blocks per stage
-- @return list of pp integers
function grid.partition(depth, pp, split)
  if split then
    local t = {}
    for i, v in ipairs(split) do t[i] = v end
    return t
  end
  local base, extra, t = depth // pp, depth % pp, {}
  for s = 1, pp do t[s] = base + (s <= extra and 1 or 0) end
  return t
end

--- Checks a layout against the world size and the model, with no
-- communication: the same answer on every rank.
-- @param cfg a config (lunar.config.load) or a table with the same keys:
--   parallel, HIDDEN_SIZE, NUM_HEADS, MLP_RATIO, DEPTH, BATCH_SIZE,
--   NUM_MICRO_BATCHES, SEQ_LENGTH (or IMG_SIZE, PATCH_SIZE, IMG_DIMS)
-- @param world_size integer number of ranks
-- @return nil when the layout fits, else a message that says what does not
--   divide what (starting with "parallel: ")
function grid.validate(cfg, world_size)
  local r = requested(cfg)
  local function bad(fmt, ...) return 'parallel: ' .. string.format(fmt, ...) end
  if math.type(r.pp) ~= 'integer' or r.pp < 1 then return bad('pipeline size %s must be an integer >= 1', tostring(r.pp)) end
  if math.type(r.tp) ~= 'integer' or r.tp < 1 then return bad('tensor size %s must be an integer >= 1', tostring(r.tp)) end
  local multi = r.mode == '2d' or r.mode == '2.5d' or r.mode == '3d'   -- lunar.parallel.tensor_2d, tensor_3d
  if r.mode ~= '1d' and r.mode ~= 'none' and not multi then
    return bad("unknown tensor mode '%s' (parallel.tensor.mode is '1d', '2d', '2.5d', '3d' or 'none')", tostring(r.mode))
  end
  if r.tp > 1 and r.mode == 'none' then
    return bad("tensor parallel size %d needs tensor mode '1d', '2d', '2.5d' or '3d' (parallel.tensor.mode is 'none')", r.tp)
  end
  if r.depth ~= nil and r.mode ~= '2.5d' then
    return bad("parallel.tensor.depth %s is only for tensor mode '2.5d' (mode is '%s')", tostring(r.depth), r.mode)
  end
  if multi then
    local msg
    if r.mode == '3d' then msg = tensor_3d.check(r.tp, cfg) else msg = tensor_2d.check(r.mode, r.tp, r.depth, cfg) end
    if msg then return bad('%s', msg) end
  end
  if r.schedule ~= '1f1b' and r.schedule ~= 'gpipe' then
    return bad("unknown pipeline_schedule '%s' ('1f1b' or 'gpipe')", tostring(r.schedule))
  end
  if (cfg.parallel or {}).domain ~= nil then
    local msg = grid.validate_domain(cfg, r, world_size)
    if msg then return bad('%s', msg) end
  end
  local mp = r.pp * r.tp * r.domain
  local dom = r.domain > 1 and string.format(' x domain (%d)', r.domain) or ''
  if world_size % mp ~= 0 then
    return bad('world size %d is not divisible by pipeline (%d) x tensor (%d)%s = %d', world_size, r.pp, r.tp, dom,
      mp)
  end
  if r.dp ~= 0 and r.dp * mp ~= world_size then
    return bad('data (%d) x pipeline (%d) x tensor (%d)%s = %d does not equal the world size %d',
      r.dp, r.pp, r.tp, dom, r.dp * mp, world_size)
  end
  if r.tp > 1 and r.mode == '1d' then
    local heads, dim, hidden = cfg.NUM_HEADS, cfg.HIDDEN_SIZE, mlp_hidden(cfg)
    if dim and dim % r.tp ~= 0 then
      return bad('HIDDEN_SIZE %d is not divisible by the tensor parallel size %d', dim, r.tp)
    end
    if heads and heads % r.tp ~= 0 then
      return bad('NUM_HEADS %d is not divisible by the tensor parallel size %d (heads are split across tensor ranks)',
        heads, r.tp)
    end
    if dim and hidden % r.tp ~= 0 then
      return bad('the MLP hidden size %d (HIDDEN_SIZE %d x MLP_RATIO %g) is not divisible by the tensor parallel size %d',
        hidden, dim, cfg.MLP_RATIO or 4, r.tp)
    end
  end
  if r.sp then
    if r.mode ~= '1d' or r.tp < 2 then
      return bad("sequence_parallel needs tensor mode '1d' with a tensor parallel size > 1 (got mode '%s', size %d)",
        r.mode, r.tp)
    end
    local n = seq_length(cfg)
    if n and n % r.tp ~= 0 then
      return bad('sequence_parallel: the %d tokens per image (SEQ_LENGTH, class token included) are not divisible ' ..
        'by the tensor parallel size %d (no padding: choose IMG_SIZE/PATCH_SIZE so that tokens %% tensor == 0)', n, r.tp)
    end
  end
  local depth = cfg.DEPTH
  if depth then
    if r.split then
      if #r.split ~= r.pp then
        return bad('pipeline_split %s has %d entries for %d pipeline stages', fmt_list(r.split), #r.split, r.pp)
      end
      local sum = 0
      for i, v in ipairs(r.split) do
        if math.type(v) ~= 'integer' or v < 1 then
          return bad('pipeline_split %s gives stage %d %s blocks (every stage needs at least one)',
            fmt_list(r.split), i - 1, tostring(v))
        end
        sum = sum + v
      end
      if sum ~= depth then
        return bad('pipeline_split %s sums to %d blocks, not DEPTH %d (every block must belong to exactly one stage)',
          fmt_list(r.split), sum, depth)
      end
    elseif depth < r.pp then
      return bad('DEPTH %d is fewer blocks than the %d pipeline stages (every stage needs at least one block)',
        depth, r.pp)
    end
  end
  local lw = require('lunar.parallel.layerwise').validate(cfg, world_size, r)
  if lw then return lw end
  -- sharded data parallelism: the shard groups divide the data-parallel group
  local zero = require('lunar.parallel.zero')
  local z, zmsg = zero.parse((cfg.parallel or {}).zero)
  zmsg = zmsg and ('parallel.zero ' .. zmsg) or zero.validate(z, r.dp ~= 0 and r.dp or world_size // mp)
  if zmsg then return 'parallel: ' .. zmsg end
  if z.stage > 0 then
    -- compositions not proven equal to one rank yet: refused, naming both keys
    local other = (r.mode == '2d' or r.mode == '2.5d' or r.mode == '3d') and
        string.format("tensor mode '%s' (sharded data parallelism composes with 1D tensor parallelism)", r.mode)
      or (cfg.parallel or {}).block_tensor and 'parallel.block_tensor (per-block tensor sizes)'
    if other then
      return string.format('parallel: parallel.zero (stage %d) does not compose with %s yet: use one of them',
        z.stage, other)
    end
  end
  local m = cfg.NUM_MICRO_BATCHES or 1
  if cfg.BATCH_SIZE and cfg.BATCH_SIZE % m ~= 0 then
    return bad('BATCH_SIZE %d (per data-parallel rank) is not divisible by NUM_MICRO_BATCHES %d', cfg.BATCH_SIZE, m)
  end
  return nil
end

--- The checks of parallel.domain (r: the requested sizes), no communication:
-- nil, or what is wrong. Domain parallelism shards each image's patch rows
-- (3D: planes) over the domain ranks: every rank needs at least one row, the
-- model must have a domain-parallel form (MODEL = 'hybrid_vit' or a MODEL
-- function; the built-in ViT's class token is global), and tensor and
-- pipeline parallelism do not compose with it yet.
function grid.validate_domain(cfg, r, world_size)
  local d = r.domain
  if math.type(d) ~= 'integer' or d < 1 then return string.format('domain size %s must be an integer >= 1', tostring(d)) end
  if r.domain_attention ~= 'ring' and r.domain_attention ~= 'allgather' then
    return string.format("unknown domain attention '%s' (parallel.domain.attention is 'ring' or 'allgather')",
      tostring(r.domain_attention))
  end
  if d == 1 then return nil end
  if r.tp > 1 or r.pp > 1 or r.sp then
    return string.format('domain parallelism (domain = %d) does not compose with tensor (%d) or pipeline (%d) ' ..
      'parallelism yet: use domain x data only (parallel = {domain = %d})', d, r.tp, r.pp, d)
  end
  if cfg.MODEL == nil or cfg.MODEL == 'vit' then
    return string.format("domain parallelism (domain = %d) needs MODEL = 'hybrid_vit' or a MODEL function of " ..
      "domain-parallel leaves (the built-in ViT's class token and final token are global)", d)
  end
  if type(cfg.device) == 'string' and cfg.device:match('^cuda') then
    return string.format("domain parallelism (domain = %d) runs on the CPU only yet (the ring attention's block " ..
      "kernel has no CUDA form): set device = 'cpu'", d)
  end
  if (cfg.EVAL_SHIFT or 0) > 0 then
    return string.format('EVAL_SHIFT = %d shifts whole images, which domain parallelism (domain = %d) shards by ' ..
      'rows: set EVAL_SHIFT = 0 (EVAL_HFLIP composes with it)', cfg.EVAL_SHIFT, d)
  end
  local rows = cfg.IMG_SIZE and cfg.PATCH_SIZE and cfg.IMG_SIZE // cfg.PATCH_SIZE
  if rows and d > rows then
    return string.format('domain size %d is more than the %d %s of patches (IMG_SIZE %d / PATCH_SIZE %d): a domain ' ..
      'rank would hold no patch', d, rows, (cfg.IMG_DIMS or 2) == 3 and 'planes' or 'rows', cfg.IMG_SIZE, cfg.PATCH_SIZE)
  end
  return nil
end

--- Builds the grid of `comm` (default: the world) for `cfg`; collective over
-- comm (three to four comm:split calls, the same on every rank). Raises
-- error(msg, 0) when the layout does not fit (before any collective).
-- @param cfg config (see grid.validate)
-- @param comm optional lunar.comm communicator (default lunar.comm.world())
-- @return the grid (fields in the module doc)
function grid.new(cfg, comm)
  comm = comm or lunar.comm.world()
  local world_size = comm:size()
  local msg = grid.validate(cfg, world_size)
  if msg then error(msg, 0) end
  local r = requested(cfg)
  local tp, pp, dom = r.tp, r.pp, r.domain
  local dp = world_size // (tp * pp * dom)
  local g = setmetatable({
    world = comm, rank = comm:rank(), world_size = world_size,
    dp_size = dp, tp_size = tp, pp_size = pp, domain_size = dom, domain_attention = r.domain_attention,
    tensor_mode = r.mode, tensor_depth = r.depth, sequence_parallel = r.sp,
    num_micro_batches = cfg.NUM_MICRO_BATCHES or 1, pipeline_schedule = r.schedule,
    zero = require('lunar.parallel.zero').parse((cfg.parallel or {}).zero),
    depth = cfg.DEPTH,
  }, Grid)
  g.pp_rank, g.dp_rank, g.tp_rank, g.domain_rank = g:coords_of(g.rank)
  -- groups: every rank calls every split, in this order (colors: the other coordinates;
  -- the domain rank is 0 without domain parallelism)
  local name, dr = comm:name(), g.domain_rank
  g.tp_group = comm:split((g.pp_rank * dp + g.dp_rank) * dom + dr, g.tp_rank, name .. '/tp')
  g.dp_group = comm:split((g.pp_rank * tp + g.tp_rank) * dom + dr, g.dp_rank, name .. '/dp')
  g.pp_group = comm:split((g.dp_rank * tp + g.tp_rank) * dom + dr, g.pp_rank, name .. '/pp')
  g.mp_group = comm:split(g.dp_rank * dom + dr, g.pp_rank * tp + g.tp_rank, name .. '/mp')
  if dom > 1 then
    g.domain_group = comm:split((g.pp_rank * dp + g.dp_rank) * tp + g.tp_rank, dr, name .. '/domain')
    g.grad_group = comm:split(g.pp_rank * tp + g.tp_rank, g.dp_rank * dom + dr, name .. '/domain_data')
  end
  -- g.tensor_groups: the groups of the modes that split activations
  if r.mode == '2d' or r.mode == '2.5d' then tensor_2d.make_groups(g, r.mode, r.depth) end
  if r.mode == '3d' then tensor_3d.make_groups(g) end
  local list = cfg.parallel and cfg.parallel.block_tensor
  if list then
    -- per-block tensor sizes (lunar.parallel.layerwise): each size's tensor and data groups
    local layerwise = require('lunar.parallel.layerwise')
    g.block_tensor, g.block_tensor_consec = list, cfg.parallel.block_tensor_consec
    g.block_groups = layerwise.groups(comm, list, g.block_tensor_consec)
    g.grad_sync = layerwise.grad_sync
  end
  if cfg.DEPTH then
    g.splits = grid.partition(cfg.DEPTH, pp, r.split)
    g.stage = g:stage_info(g.pp_rank)
  else
    g.stage = {index = g.pp_rank, is_first = g.pp_rank == 0, is_last = g.pp_rank == pp - 1}
  end
  return g
end

--- The global rank of coordinates (pp, dp, tp[, domain]), all 0-based.
function Grid:rank_of(pp, dp, tp, domain)
  local dom = self.domain_size or 1
  return pp * (self.dp_size * dom * self.tp_size) + dp * (dom * self.tp_size) + (domain or 0) * self.tp_size + tp
end

--- The coordinates (pp, dp, tp, domain) of a global rank.
function Grid:coords_of(rank)
  local dom = self.domain_size or 1
  local per_stage = self.dp_size * dom * self.tp_size
  local in_stage = rank % per_stage
  return rank // per_stage, in_stage // (dom * self.tp_size), rank % self.tp_size, (in_stage // self.tp_size) % dom
end

--- Stage `s` (0-based): {index, first_block, last_block, is_first, is_last, num_blocks}.
function Grid:stage_info(s)
  local first = 0
  for i = 1, s do first = first + self.splits[i] end
  return {index = s, first_block = first, last_block = first + self.splits[s + 1] - 1,
    num_blocks = self.splits[s + 1], is_first = s == 0, is_last = s == self.pp_size - 1}
end

--- The pipeline stage (0-based) that owns block i (0-based).
function Grid:stage_of_block(i)
  local hi = -1
  for s = 1, self.pp_size do
    hi = hi + self.splits[s]
    if i <= hi then return s - 1 end
  end
  error(string.format('grid: block %d is beyond DEPTH %d', i, hi + 1), 2)
end

--- A table of the ranks: one line per pipeline stage (with its blocks), the
-- data-parallel replicas across, each a list of its tensor-parallel ranks.
function Grid:describe()
  local tg = self.tensor_groups
  local dom = self.domain_size or 1
  local lines = {string.format('process grid: world %d = data %d x pipeline %d x tensor %d%s%s%s (tensor innermost)',
    self.world_size, self.dp_size, self.pp_size, self.tp_size,
    tg and (self.tensor_mode == '3d' and string.format(" (mode '3d': %d x %d x %d, tensor rank = i*%d + j*%d + l)",
      tg.q, tg.q, tg.q, tg.q * tg.q, tg.q) or string.format(" (mode '%s': %s%d x %d, tensor rank = depth*%d + " ..
      'row*%d + column)', self.tensor_mode, tg.d > 1 and (tg.d .. ' x ') or '', tg.q, tg.q, tg.q * tg.q, tg.q)) or '',
    dom > 1 and string.format(' x domain %d (%s attention)', dom, self.domain_attention) or '',
    self.sequence_parallel and ', sequence parallel' or '')}
  for s = 0, self.pp_size - 1 do
    local cells = {}
    for d = 0, self.dp_size - 1 do
      local ranks = {}
      for m = 0, dom - 1 do
        for t = 0, self.tp_size - 1 do ranks[#ranks + 1] = tostring(self:rank_of(s, d, t, m)) end
      end
      cells[#cells + 1] = string.format('dp %d: [%s]', d, table.concat(ranks, ' '))
    end
    local blocks = ''
    if self.splits then
      local st = self:stage_info(s)
      blocks = st.first_block == st.last_block and string.format(' (block %d)', st.first_block)
        or string.format(' (blocks %d-%d)', st.first_block, st.last_block)
    end
    lines[#lines + 1] = string.format('  stage %d%s: %s', s, blocks, table.concat(cells, '  '))
  end
  if self.pp_size > 1 then
    lines[#lines + 1] = string.format('  pipeline schedule %s, %d micro-batches', self.pipeline_schedule,
      self.num_micro_batches)
  end
  return table.concat(lines, '\n')
end

function Grid:__tostring()
  return string.format('grid(rank %d: pp %d dp %d tp %d of %dx%dx%d)', self.rank, self.pp_rank, self.dp_rank,
    self.tp_rank, self.pp_size, self.dp_size, self.tp_size)
end

return grid
