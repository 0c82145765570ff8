-- tests/mpi/domain_repl.lua: one rank of a domain-parallel job stopped in the
-- REPL (tests/mpi/test_domain.sh runs it under mpirun --stdin 1 ... --repl-rank 1).
-- A HybridViT at domain 2 over 3 patch rows (IMG_SIZE 12, PATCH_SIZE 4): rank
-- 0 holds 2 rows of patches (8 pixel rows), rank 1 one (4 pixel rows). After
-- one training step, lunar.breakpoint() stops rank 1 with the run, its slab
-- batch `x` and the step's `loss` as locals; the other rank waits in its next
-- collective; then both take a second step and print their losses, which are
-- the same on both ranks (the loss is reduced over the domain group).
local setup = require('lunar.setup')
local run = setup.from_config('configs/vit_fmnist.lua', {'MODEL=hybrid_vit', 'DATASET=synthetic', 'NUM_SAMPLES=16',
  'IMG_SIZE=12', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=1', 'BATCH_SIZE=4', 'METRICS_FILE=',
  'parallel={domain=2}'}, {quiet = true})
local x, y = run.train_loader:next()
local loss = run.engine:train_step(x, y)
lunar.breakpoint()
x, y = run.train_loader:next()
local loss2 = run.engine:train_step(x, y)
print(string.format('rank %d: step 2 loss %.6f', lunar.rank, loss2))
