-- configs/recipes/vit_b8_image_sizes.lua: the image-size benchmark of
-- PhysicsNeMo's ViT example (examples/benchmark_image_sizes.lua): a ViT-B
-- width (768, 12 heads, MLP 3072) with 8 x 8 patches and 16 blocks on
-- synthetic 3-channel images, one image per data-parallel rank, the image side
-- swept from SWEEP_START to SWEEP_STOP by SWEEP_STEP.
--
-- PhysicsNeMo sweeps 256 .. 2048 by 128 on GPUs; the defaults here (64 .. 256
-- by 64: 65 to 1025 tokens) finish on a CPU. For the full sweep:
--   build/lunar examples/benchmark_image_sizes.lua \
--     --config configs/recipes/vit_b8_image_sizes.lua SWEEP_START=256 SWEEP_STOP=2048 SWEEP_STEP=128
-- 3D volumes (tokens grow as the cube of the side): IMG_DIMS=3 SWEEP_START=32 SWEEP_STOP=128 SWEEP_STEP=32
include '../models/vit_b16.lua'

DATASET = 'synthetic'
PATCH_SIZE = 8
DEPTH = 16
IMG_DIMS = 2
IMG_SIZE = 64                -- the first size (any multiple of PATCH_SIZE; the sweep replaces it)

parallel = { pipeline = 1, tensor = { mode = 'none', size = 1 } }   -- data = the world size
BATCH_SIZE = 1               -- per data-parallel rank

SWEEP_START = 64
SWEEP_STOP = 256
SWEEP_STEP = 64
BENCH_WARMUP = 1
BENCH_STEPS = 3
BENCH_CSV = 'benchmark_image_sizes.csv'
