-- configs/recipes/vit_b16_finetune384_sgd.lua: NeMo's second stage: ViT-B/16
-- pretrained at 224 x 224 (a 14 x 14 patch grid), fine-tuned on ImageNet-1k
-- at 384 x 384 (24 x 24) with SGD, momentum 0.9 (Dosovitskiy et al. 2021,
-- appendix B.1.1: SGD momentum 0.9, no weight decay, gradient clipping at
-- global norm 1, batch 512, cosine decay, a short warmup; NeMo's fine-tuning
-- recipe follows it).
--
-- PRETRAINED names the 224 checkpoint, timm's safetensors with timm's names:
-- a Lunar run's export (lunar.timm.export) or timm's own
-- (safetensors.torch.save_file(model.state_dict(), path)). Loading it into
-- this 384 model resamples pos_embed from 1 + 14^2 to 1 + 24^2 tokens as
-- timm's resample_abs_pos_embed does (bicubic, antialiased, the class token
-- kept: lua/lunar/timm.lua); a head of another class count stays at its init.
--
-- Ranks: data = the world size. On 32 ranks the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 16 * 32 * 1 = 512;
-- on another world size, scale BATCH_SIZE or gradient_accumulation to keep it.
--
-- Data: ImageNet-1k as an image folder, as vit_b16_imagenet_folder_dp.lua
-- (DATASET = 'imagenet_zip' with Galvatron's zips works the same). Set
-- DATA_DIR and PRETRAINED (the defaults below are placeholders: a missing
-- directory or file stops the run naming it).
--   build/lunar config show configs/recipes/vit_b16_finetune384_sgd.lua
--   mpirun -np 32 build/lunar examples/train_with_trainer.lua \
--     --config configs/recipes/vit_b16_finetune384_sgd.lua \
--     DATA_DIR=/path/to/imagenet PRETRAINED=/path/to/vit_b16_224.safetensors
include '../models/vit_b16.lua'

-- the 224 pretraining's weights (timm names, safetensors)
PRETRAINED = 'checkpoints/vit_b16_224.safetensors'

-- data: ImageNet-1k at 384 x 384 (577 tokens with the class token)
IMG_SIZE = 384
DATASET = 'image_folder'
DATA_DIR = 'data/imagenet'
DATA_THREADS = 8
CROP_PCT = 1.0               -- fine-tuning at 384 evaluates on the whole resized image (timm's 384 models)

-- parallel layout: data parallel only (data = world size)
parallel = { pipeline = 1, tensor = { mode = 'none', size = 1 } }

-- hyperparameters: SGD with momentum, no weight decay, cosine decay
OPTIMIZER = 'sgd'
MOMENTUM = 0.9
LEARNING_RATE = 0.01
WEIGHT_DECAY = 0.0
BATCH_SIZE = 16              -- per data-parallel rank
gradient_accumulation = 1
NUM_EPOCHS = 8               -- about 20,000 steps of 512 images on ImageNet-1k's 1,281,167
WARMUP_EPOCHS = 0.2          -- about 500 steps
MIN_LR = 0.0
DROPOUT = 0.0
LABEL_SMOOTHING = 0.0
clip_grad_norm = 1.0
LOG_EVERY = 50
