-- configs/recipes/vit_2p5d.lua: Colossal-AI's hybrid-parallel ViT benchmark
-- (configs/vit_2p5d.py) in tensor mode '2.5d' (Tesseract,
-- lunar.parallel.tensor_2d): vit_2d.lua's model and hyperparameters on
-- 2 layers (depth 2) of a 2 x 2 grid per replica: 8 tensor ranks. Weights
-- are split in 4 and replicated over the 2 layers (their gradients summed
-- over the depth group), activations in 8 (the micro-batch of 128 images in
-- 4 batch blocks, the features in 2).
--
-- Ranks: data * tensor (8). On 64 ranks the data-parallel size is 8 and the
-- global batch 128 * 8 = 1024.
--   mpirun -np 8 build/lunar examples/train_with_engine.lua --config configs/recipes/vit_2p5d.lua
include 'vit_2d.lua'

parallel = {
  tensor = { mode = '2.5d', size = 8, depth = 2 },
}
