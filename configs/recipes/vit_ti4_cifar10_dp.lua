-- configs/recipes/vit_ti4_cifar10_dp.lua: ViT-Ti's width, depth and heads (192,
-- 12, 3) with patch 4 on CIFAR-10's 32 x 32 images (patch 16 would leave 4
-- tokens), trained with data parallelism only: every rank holds the whole
-- model and 1/N of each global batch.
-- Lunar's counterpart of Colossal-AI's ViT-on-CIFAR-10 example
-- (train_with_cifar10 / vit_cifar10's train_dp.py with
-- config_data_parallel.py: a ViT with 4 x 4 patches on 32 x 32 CIFAR-10,
-- data parallel); the CIFAR reader applies no augmentation (Colossal-AI's
-- RandomCrop(padding 4) + flip are not reproduced).
--
-- Ranks: data = the world size. On 4 ranks the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 128 * 4 * 1 = 512.
-- CIFAR-10's binary version (data_batch_1..5.bin, test_batch.bin) in DATA_DIR:
-- https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extracted.
--   build/lunar config show configs/recipes/vit_ti4_cifar10_dp.lua
--   mpirun -np 4 build/lunar examples/train_with_trainer.lua \
--     --config configs/recipes/vit_ti4_cifar10_dp.lua DATA_DIR=data/cifar-10-batches-bin
include '../models/vit_ti16.lua'

-- data
DATASET = 'cifar10'
DATA_DIR = 'data/cifar-10-batches-bin'
IMG_SIZE = 32
IN_CHANS = 3
NUM_CLASSES = 10

-- model: ViT-Ti with 4 x 4 patches (65 tokens)
PATCH_SIZE = 4

-- parallel layout: data parallel only (data = world size)
parallel = { pipeline = 1, tensor = { mode = 'none', size = 1 } }

-- hyperparameters
BATCH_SIZE = 128             -- per data-parallel rank
gradient_accumulation = 1
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
NUM_EPOCHS = 100
WARMUP_EPOCHS = 5
LABEL_SMOOTHING = 0.1
clip_grad_norm = 1.0
LOG_EVERY = 50
