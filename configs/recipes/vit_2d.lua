-- configs/recipes/vit_2d.lua: Colossal-AI's hybrid-parallel ViT benchmark
-- (examples/images/vit, configs/vit_2d.py) in tensor mode '2d' (Optimus /
-- SUMMA, lunar.parallel.tensor_2d): its model (width 4096, 32 blocks, 64
-- heads, MLP 4x, 224 x 224 images in 16 x 16 patches, 1000 classes: 6.5B
-- parameters) and hyperparameters, on a 2 x 2 tensor grid per replica.
--
-- Ranks: data * tensor (4). On 64 ranks the data-parallel size is 16 and
-- the global batch BATCH_SIZE * data = 128 * 16 = 2048 (Colossal-AI's
-- BATCH_SIZE is per data-parallel rank, as here). Every weight and every
-- activation is split in 4 (1/q^2); the micro-batch of 128 images in 2
-- batch blocks, the features in 2 blocks.
--
-- Data: synthetic 224 x 224 images of 1000 classes, ImageNet's shape.
--   build/lunar config show configs/recipes/vit_2d.lua
--   mpirun -np 4 build/lunar examples/train_with_engine.lua --config configs/recipes/vit_2d.lua
-- vit_2p5d.lua and vit_3d.lua include this file and change only `parallel`.
DATASET = 'synthetic'
NUM_SAMPLES = 4096
IMG_SIZE = 224
PATCH_SIZE = 16
IN_CHANS = 3
NUM_CLASSES = 1000
HIDDEN_SIZE = 4096
DEPTH = 32
NUM_HEADS = 64
MLP_RATIO = 4

parallel = {
  tensor = { mode = '2d', size = 4 },
}

BATCH_SIZE = 128             -- per data-parallel rank
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.3
NUM_EPOCHS = 300
WARMUP_EPOCHS = 32
DROPOUT = 0                  -- the modes that split activations refuse dropout (see README)
CHECKPOINT = true            -- activation checkpointing, as Colossal-AI's CHECKPOINT = True
clip_grad_norm = 1.0
precision = 'bf16'
