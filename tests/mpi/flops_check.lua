-- tests/mpi/flops_check.lua: nn.flops under tensor and pipeline parallelism
-- (setup.from_config's run.flops_per_image for a config's MODEL): each rank
-- counts its own part and the group sums, which must equal the count of the
-- whole unsplit model (built here, on every rank, as the independent side).
-- Run by tests/mpi/test_models_as_code.sh under mpirun with the layouts given
-- as arguments (each a parallel override, e.g. 'parallel={pipeline=2}');
-- ends with "rank R: flops_check N passed, M failed, K skipped".
local setup = require('lunar.setup')
local config = require('lunar.config')
local nn = require('lunar.nn')

local world = lunar.comm.world()
package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks
local checks = require('rank_checks').new('flops_check', world)
local check = checks.check

local SMALL = {'DATASET=synthetic', 'NUM_SAMPLES=16', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=2', 'BATCH_SIZE=4',
  'NUM_MICRO_BATCHES=2', 'EVAL_EVERY_EPOCH=false', 'NUM_THREADS=1', 'METRICS_FILE='}

for _, name in ipairs({'meanpool_head', 'vit_composed'}) do
  for _, layout in ipairs(lunar.args.rest or {}) do
    local o = {layout}
    for _, v in ipairs(SMALL) do o[#o + 1] = v end
    local cfg = config.load(lunar.home .. '/configs/examples/' .. name .. '.lua', o)
    local run = setup.from_config(cfg, nil, {quiet = true, loaders = false})
    local img = {cfg.IN_CHANS}
    for _ = 1, cfg.IMG_DIMS do img[#img + 1] = cfg.IMG_SIZE end
    local whole = nn.materialize(cfg.MODEL(cfg, nn), 0)
    local want = nn.flops.train_flops_per_image(whole, img)
    check(string.format('%s, %s: the parts sum to the unsplit count %d', name, layout, want),
      run.flops_per_image == want, tostring(run.flops_per_image))
    check(string.format('%s, %s: this rank holds a part', name, layout), run.model:num_parameters() <
      whole:num_parameters(), run.model:num_parameters())
    whole._flat:free(); whole._flat_grad:free()
  end
end
checks.finish()
