-- configs/recipes/vit_b16_synthetic224_tp2_pp2.lua: ViT-B/16 with the
-- hyperparameters of NeMo's ImageNet-1k pretraining recipe (300 epochs, global
-- batch 4096, AdamW (0.9, 0.999), peak learning rate 3e-3 with cosine decay,
-- weight decay 0.3, dropout 0.1) on a 2 x 2 tensor x pipeline grid per
-- replica, trained on synthetic 224 x 224 RGB images of 1000 classes (the
-- name says synthetic224: no real images are read).
--
-- Ranks: data * pipeline * tensor. On 32 ranks the data-parallel size is
-- 32 / (2 * 2) = 8, and the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 256 * 8 * 2 = 4096.
-- On another world size, scale BATCH_SIZE or gradient_accumulation to keep it.
--
-- Data: synthetic images of ImageNet's shape, for throughput and scaling runs;
-- Lunar has no ImageNet reader yet (docs/DESIGN.md: image folders). When it
-- lands, a recipe that sets DATASET and DATA_DIR trains on real data.
--   build/lunar config show configs/recipes/vit_b16_synthetic224_tp2_pp2.lua
--   mpirun -np 32 build/lunar examples/train_with_trainer.lua \
--     --config configs/recipes/vit_b16_synthetic224_tp2_pp2.lua
include '../models/vit_b16.lua'

-- data
DATASET = 'synthetic'
NUM_SAMPLES = 4096           -- one global batch of synthetic images (2.5 GB in memory)

-- parallel layout (Colossal-AI's dict): data is derived from the world size
parallel = {
  pipeline = 2,
  tensor = { mode = '1d', size = 2 },
}
NUM_MICRO_BATCHES = 8        -- 8 micro-batches of 32 images per pipeline step

-- hyperparameters
BATCH_SIZE = 256             -- per data-parallel rank
gradient_accumulation = 2
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.3
NUM_EPOCHS = 300
WARMUP_EPOCHS = 32           -- Colossal-AI's ViT-B/16 ImageNet recipe
DROPOUT = 0.1
clip_grad_norm = 1.0
OPTIMIZER = 'adamw'
BETA1 = 0.9
BETA2 = 0.999
LOG_EVERY = 50
