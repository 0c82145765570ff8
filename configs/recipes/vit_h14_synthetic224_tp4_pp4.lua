-- configs/recipes/vit_h14_synthetic224_tp4_pp4.lua: ViT-H/14 on a
-- 4 x 4 tensor x pipeline grid per replica (632M parameters: 16 ranks hold one
-- replica, about 40M parameters each, so the AdamW state fits beside the
-- activations), with the hyperparameters of the B/16 recipe.
--
-- Ranks: data * pipeline * tensor. On 64 ranks the data-parallel size is
-- 64 / (4 * 4) = 4, and the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 256 * 4 * 4 = 4096.
--
-- Data: synthetic 224 x 224 images of 1000 classes, ImageNet's shape (see
-- vit_b16_synthetic224_tp2_pp2.lua).
--   build/lunar config show configs/recipes/vit_h14_synthetic224_tp4_pp4.lua
include '../models/vit_h14.lua'

DATASET = 'synthetic'
NUM_SAMPLES = 4096

parallel = {
  pipeline = 4,
  tensor = { mode = '1d', size = 4 },
  -- no sequence_parallel: it needs the tokens (257) divisible by the tensor size
}
NUM_MICRO_BATCHES = 16       -- 16 micro-batches of 16 images: the 1F1B bubble is 3/19

BATCH_SIZE = 256             -- per data-parallel rank
gradient_accumulation = 4
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.3
NUM_EPOCHS = 300
WARMUP_EPOCHS = 32
DROPOUT = 0.1
clip_grad_norm = 1.0
precision = 'bf16'
