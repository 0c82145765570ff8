-- tests/mpi/grid_check.lua: lunar.parallel.grid without communication:
-- grid.validate's message for each layout that does not fit (what does not
-- divide what), the even and explicit pipeline splits, and Megatron's rank
-- order (tensor innermost, then data, then pipeline) on the coordinates.
-- Run alone by tests/mpi/test_layout_errors.sh; ends with "N passed, N failed".
local grid = require('lunar.parallel.grid')
local passed, failed = 0, 0
local function check(name, cond, detail)
  if cond then passed = passed + 1; print('  ok ' .. name)
  else failed = failed + 1; print('  FAIL ' .. name .. (detail and (': ' .. tostring(detail)) or '')) end
end

local function cfg(t)
  local c = {HIDDEN_SIZE = 16, NUM_HEADS = 4, MLP_RATIO = 4, DEPTH = 4, BATCH_SIZE = 8, NUM_MICRO_BATCHES = 1,
    IMG_SIZE = 12, PATCH_SIZE = 4, IMG_DIMS = 2, parallel = {}}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function rejects(name, c, world, needles)
  local msg = grid.validate(c, world)
  local ok = msg ~= nil
  for _, s in ipairs(needles) do ok = ok and msg:find(s, 1, true) ~= nil end
  check(name, ok, msg or 'accepted')
end

local function accepts(name, c, world)
  local msg = grid.validate(c, world)
  check(name, msg == nil, msg)
end

rejects('world not divisible by pipeline x tensor', cfg{parallel = {pipeline = 2, tensor = {mode = '1d', size = 2}}}, 6,
  {'world size 6 is not divisible by pipeline (2) x tensor (2) = 4'})
rejects('data x pipeline x tensor is not the world', cfg{parallel = {data = 3, pipeline = 2}}, 4,
  {'data (3) x pipeline (2) x tensor (1) = 6 does not equal the world size 4'})
rejects('HIDDEN_SIZE not divisible by tensor', cfg{HIDDEN_SIZE = 6, NUM_HEADS = 3,
  parallel = {tensor = {mode = '1d', size = 4}}}, 4, {'HIDDEN_SIZE 6 is not divisible by the tensor parallel size 4'})
rejects('NUM_HEADS not divisible by tensor', cfg{HIDDEN_SIZE = 24, NUM_HEADS = 3,
  parallel = {tensor = {mode = '1d', size = 2}}}, 2, {'NUM_HEADS 3 is not divisible by the tensor parallel size 2'})
rejects('MLP hidden not divisible by tensor', cfg{HIDDEN_SIZE = 8, NUM_HEADS = 2, MLP_RATIO = 1.125,
  parallel = {tensor = {mode = '1d', size = 2}}}, 2, {'MLP hidden size 9', 'not divisible by the tensor parallel size 2'})
rejects('fewer blocks than stages', cfg{DEPTH = 2, parallel = {pipeline = 4}}, 4,
  {'DEPTH 2 is fewer blocks than the 4 pipeline stages'})
rejects('pipeline_split does not sum to DEPTH', cfg{parallel = {pipeline = 2, pipeline_split = {2, 3}}}, 2,
  {'pipeline_split {2, 3} sums to 5 blocks, not DEPTH 4'})
rejects('pipeline_split with an empty stage', cfg{parallel = {pipeline = 2, pipeline_split = {4, 0}}}, 2,
  {'pipeline_split {4, 0} gives stage 1 0 blocks'})
rejects('pipeline_split of the wrong length', cfg{parallel = {pipeline = 2, pipeline_split = {1, 1, 2}}}, 2,
  {'pipeline_split {1, 1, 2} has 3 entries for 2 pipeline stages'})
rejects('batch not divisible by micro-batches', cfg{BATCH_SIZE = 6, NUM_MICRO_BATCHES = 4}, 1,
  {'BATCH_SIZE 6 (per data-parallel rank) is not divisible by NUM_MICRO_BATCHES 4'})
rejects('unknown tensor mode', cfg{parallel = {tensor = {mode = '4d', size = 4}}}, 4, {"unknown tensor mode '4d'"})
rejects('tensor size > 1 needs mode 1d', cfg{parallel = {tensor = {mode = 'none', size = 2}}}, 2,
  {"tensor parallel size 2 needs tensor mode '1d'"})
rejects('sequence parallel without tensor parallel', cfg{parallel = {sequence_parallel = true}}, 1,
  {'sequence_parallel needs tensor mode'})
rejects('sequence parallel with tokens not divisible by tensor', cfg{IMG_SIZE = 8,
  parallel = {tensor = {mode = '1d', size = 2}, sequence_parallel = true}}, 2,
  {'the 5 tokens per image', 'not divisible by the tensor parallel size 2'})
-- 2D / 2.5D (lunar.parallel.tensor_2d): one message naming the key and the numbers
local function t2(mode, size, depth) return {tensor = {mode = mode, size = size, depth = depth}} end
rejects('2d: size not a square', cfg{parallel = t2('2d', 6)}, 6,
  {"tensor mode '2d' needs parallel.tensor.size = q x q", 'got 6 (not a perfect square)'})
rejects('2.5d: depth does not divide the size', cfg{parallel = t2('2.5d', 8, 3)}, 8,
  {'parallel.tensor.depth 3 does not divide parallel.tensor.size 8'})
rejects('2.5d: size / depth not a square', cfg{parallel = t2('2.5d', 12, 2)}, 12,
  {'size 12 / depth 2 = 6 is not a perfect square'})
rejects('depth without 2.5d', cfg{parallel = t2('2d', 4, 2)}, 4, {"parallel.tensor.depth 2 is only for tensor mode '2.5d'"})
rejects('2d: HIDDEN_SIZE not divisible by q x q', cfg{HIDDEN_SIZE = 6, NUM_HEADS = 2, parallel = t2('2d', 4)}, 4,
  {"tensor mode '2d' (q = 2)", 'HIDDEN_SIZE 6 is not divisible by q x q = 4'})
rejects('2d: heads not divisible by q', cfg{HIDDEN_SIZE = 36, NUM_HEADS = 4, parallel = t2('2d', 9)}, 9,
  {'NUM_HEADS 4 is not divisible by q = 3'})
rejects('2d: MLP hidden not divisible by q x q', cfg{HIDDEN_SIZE = 8, NUM_HEADS = 2, MLP_RATIO = 1.25,
  parallel = t2('2d', 4)}, 4, {'the MLP hidden size 10 (HIDDEN_SIZE 8 x MLP_RATIO 1.25) is not divisible by q x q = 4'})
rejects('2.5d: micro-batch not divisible by depth x q', cfg{BATCH_SIZE = 6, parallel = t2('2.5d', 8, 2)}, 8,
  {"tensor mode '2.5d' (q = 2, depth 2)", 'the micro-batch of 6 images', 'not divisible by depth x q = 4'})
rejects('3d: size not a cube', cfg{parallel = t2('3d', 9)}, 9,
  {"tensor mode '3d' needs parallel.tensor.size = q x q x q (8, 27, 64, ...), got 9 (not a perfect cube)"})
rejects('3d: HIDDEN_SIZE not divisible by q x q x q', cfg{HIDDEN_SIZE = 12, NUM_HEADS = 2, MLP_RATIO = 2,
  parallel = t2('3d', 8)}, 8, {"tensor mode '3d' (q = 2)", 'HIDDEN_SIZE 12 is not divisible by q x q x q = 8'})
rejects('3d: micro-batch not divisible by q x q', cfg{BATCH_SIZE = 6, parallel = t2('3d', 8)}, 8,
  {'the micro-batch of 6 images', 'not divisible by q x q = 4'})
rejects('3d: a model defined in the config', cfg{MODEL = function() end, parallel = t2('3d', 8)}, 8,
  {"config key 'MODEL' (a model defined in the config) is not supported"})
rejects('2d: sequence parallelism', cfg{parallel = {tensor = {mode = '2d', size = 4}, sequence_parallel = true}}, 4,
  {"sequence_parallel needs tensor mode '1d'"})
accepts('3d size 8 on 8', cfg{parallel = t2('3d', 8)}, 8)
accepts('2d with dropout (each element draws its mask in the whole tensor)',
  cfg{DROPOUT = 0.1, parallel = t2('2d', 4)}, 4)
accepts('3d with dropout', cfg{DROPOUT = 0.1, parallel = t2('3d', 8)}, 8)
accepts('2d size 4 x pipeline 2 on 8', cfg{parallel = {pipeline = 2, tensor = {mode = '2d', size = 4}}}, 8)
accepts('2.5d size 8 depth 2 on 8', cfg{parallel = t2('2.5d', 8, 2)}, 8)
accepts('dp 2 x tp 2 x pp 2 on 8', cfg{parallel = {pipeline = 2, tensor = {mode = '1d', size = 2}}}, 8)
accepts('sequence parallel, 10 tokens, tensor 2', cfg{parallel = {tensor = {mode = '1d', size = 2},
  sequence_parallel = true}}, 2)
accepts('pipeline_split {3, 1}', cfg{parallel = {pipeline = 2, pipeline_split = {3, 1}}}, 2)
accepts('the defaults on one rank', cfg{}, 1)

-- splits
local function same(a, b) return table.concat(a, ',') == table.concat(b, ',') end
check('even split of 4 over 2', same(grid.partition(4, 2), {2, 2}))
check('split of 6 over 4: earlier stages get the extra blocks', same(grid.partition(6, 4), {2, 2, 1, 1}))
check('explicit split kept', same(grid.partition(4, 2, {3, 1}), {3, 1}))

-- Megatron's order, through a grid built on a fake communicator of 8 ranks
local fake = {}
function fake:size() return 8 end
function fake:rank() return 5 end
function fake:name() return 'fake' end
function fake:split() return self end
local g = grid.new(cfg{parallel = {pipeline = 2, tensor = {mode = '1d', size = 2}}}, fake)
check('rank 5 of (dp 2, tp 2, pp 2) is pp 1, dp 0, tp 1', g.pp_rank == 1 and g.dp_rank == 0 and g.tp_rank == 1,
  string.format('pp %d dp %d tp %d', g.pp_rank, g.dp_rank, g.tp_rank))
local order_ok = true
for r = 0, 7 do
  local pp, dp, tp = g:coords_of(r)
  order_ok = order_ok and r == pp * 4 + dp * 2 + tp and g:rank_of(pp, dp, tp) == r
end
check('rank = pp * (dp_size * tp_size) + dp * tp_size + tp', order_ok)
check('stage 1 holds blocks 2-3 and the head', g.stage.first_block == 2 and g.stage.last_block == 3 and g.stage.is_last)
check('grid table', g:describe():find('stage 1 (blocks 2-3): dp 0: [4 5]  dp 1: [6 7]', 1, true) ~= nil, g:describe())

print(string.format('%d passed, %d failed', passed, failed))
os.exit(failed == 0 and 0 or 1)
