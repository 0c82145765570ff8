-- configs/recipes/vit_b16_imagenet_zip_tp2_pp2.lua: ViT-B/16 pretrained on
-- ImageNet-1k at 224 x 224 from Galvatron's zipped layout, with the
-- hyperparameters and the 2 x 2 tensor x pipeline grid of
-- vit_b16_synthetic224_tp2_pp2.lua (NeMo's ImageNet-1k pretraining recipe:
-- 300 epochs, global batch 4096, AdamW (0.9, 0.999), peak learning rate 3e-3
-- with cosine decay, weight decay 0.3, dropout 0.1), which it includes; only
-- the data differ.
--
-- Ranks: data * pipeline * tensor. On 32 ranks the data-parallel size is
-- 32 / (2 * 2) = 8, and the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 256 * 8 * 2 = 4096.
--
-- Data (DATASET = 'imagenet_zip', Galvatron's layout, read from the archives
-- without unpacking them): DATA_DIR/train.zip + DATA_DIR/train_map.txt and
-- DATA_DIR/val.zip + DATA_DIR/val_map.txt, one '<archive>@/<member><TAB><label>'
-- line per image. Set DATA_DIR to where they are (the default below is a
-- placeholder: a missing directory stops the run naming the file it looked
-- for). Training crops RandomResizedCrop (scale 0.08-1) + flip, evaluation
-- resizes to IMG_SIZE / CROP_PCT and center-crops; ImageNet's mean and std.
--   build/lunar config show configs/recipes/vit_b16_imagenet_zip_tp2_pp2.lua
--   mpirun -np 32 build/lunar examples/train_with_trainer.lua \
--     --config configs/recipes/vit_b16_imagenet_zip_tp2_pp2.lua DATA_DIR=/path/to/imagenet_zip
include 'vit_b16_synthetic224_tp2_pp2.lua'

-- data: zipped ImageNet-1k (1000 classes, 224 x 224 crops)
DATASET = 'imagenet_zip'
DATA_DIR = 'data/imagenet_zip'
DATA_THREADS = 8             -- JPEG decode and augmentation threads per rank
PREFETCH_BATCHES = 2
CROP_PCT = 0.875
