-- configs/recipes/vit_3d.lua: Colossal-AI's hybrid-parallel ViT benchmark
-- (configs/vit_3d.py) in tensor mode '3d' (Bian et al. 2021,
-- lunar.parallel.tensor_3d): vit_2d.lua's model and hyperparameters on a
-- 2 x 2 x 2 cube per replica: every weight and every activation split in 8
-- (1/q^3; the micro-batch of 128 images in 4 batch blocks, the features in 2).
--
-- Ranks: data * tensor (8). On 64 ranks the data-parallel size is 8 and the
-- global batch 128 * 8 = 1024.
--   mpirun -np 8 build/lunar examples/train_with_engine.lua --config configs/recipes/vit_3d.lua
include 'vit_2d.lua'

parallel = {
  tensor = { mode = '3d', size = 8 },
}
