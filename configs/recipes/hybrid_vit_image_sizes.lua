-- configs/recipes/hybrid_vit_image_sizes.lua: the image-size benchmark of
-- PhysicsNeMo's ViT example (examples/benchmark_image_sizes.lua) with its
-- model, the HybridViT (lunar.models.hybrid_vit; configs/models/hybrid_vit.lua):
-- the sizes and sweep of vit_b8_image_sizes.lua (patch 8, width 768, 16
-- blocks, 1000 classes, one synthetic 3-channel image per data-parallel rank,
-- 64 .. 256 by 64) with a convolutional patch embedding, no class token and
-- mean pooling. The reference's --domain_size is parallel.domain,
-- --ddp_size the data-parallel size (world / domain), --use_mixed_precision
-- precision = 'bf16', --dimension IMG_DIMS:
--   mpirun -np 4 build/lunar examples/benchmark_image_sizes.lua \
--     --config configs/recipes/hybrid_vit_image_sizes.lua 'parallel={domain=4}'
-- 3D volumes: IMG_DIMS=3 SWEEP_START=32 SWEEP_STOP=64 SWEEP_STEP=16
include 'vit_b8_image_sizes.lua'

MODEL = 'hybrid_vit'
