-- configs/recipes/vit_b16_imagenet_folder_dp.lua: ViT-B/16 pretrained on
-- ImageNet-1k at 224 x 224 read from torchvision's ImageFolder layout (the
-- layout of the Megatron-FSDP recipe's image folder), data parallel only:
-- every rank holds the whole model and reads 1/N of each global batch.
-- Hyperparameters: those of vit_b16_synthetic224_tp2_pp2.lua, which it
-- includes (NeMo's ImageNet-1k pretraining recipe: 300 epochs, global batch
-- 4096, AdamW (0.9, 0.999), peak learning rate 3e-3 with cosine decay, weight
-- decay 0.3, dropout 0.1, 32 warmup epochs as Colossal-AI's ViT-B/16); the
-- data, the layout and the per-rank batch differ.
--
-- Ranks: data = the world size. On 32 ranks the global batch is
--   BATCH_SIZE * data * gradient_accumulation = 64 * 32 * 2 = 4096;
-- on another world size, scale BATCH_SIZE or gradient_accumulation to keep it.
--
-- Data (DATASET = 'image_folder'): DATA_DIR/train/<class>/*.{jpg,jpeg,png} and
-- DATA_DIR/val/<class>/..., classes sorted by name as torchvision's
-- ImageFolder (ImageNet's synset directories n01440764 ... give its 1000
-- labels in the usual order). Set DATA_DIR to the folder (the default below
-- is a placeholder: a missing directory stops the run naming it).
--   build/lunar config show configs/recipes/vit_b16_imagenet_folder_dp.lua
--   mpirun -np 32 build/lunar examples/train_with_trainer.lua \
--     --config configs/recipes/vit_b16_imagenet_folder_dp.lua DATA_DIR=/path/to/imagenet
include 'vit_b16_synthetic224_tp2_pp2.lua'

-- data: ImageNet-1k as an image folder (1000 classes, 224 x 224 crops)
DATASET = 'image_folder'
DATA_DIR = 'data/imagenet'
DATA_THREADS = 8             -- JPEG decode and augmentation threads per rank
CROP_PCT = 0.875

-- parallel layout: data parallel only (data = world size), no pipeline micro-batches
parallel = { pipeline = 1, tensor = { mode = 'none', size = 1 } }
NUM_MICRO_BATCHES = 1
BATCH_SIZE = 64              -- per data-parallel rank (gradient_accumulation 2 from the included recipe)
