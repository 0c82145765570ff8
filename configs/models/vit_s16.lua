-- configs/models/vit_s16.lua: ViT-S/16 (DeiT-S, Touvron et al. 2021; timm's
-- vit_small_patch16_224), not in NeMo's table: width, depth and heads as timm.
-- 22,050,664 parameters with the 1000-class head (22.1M).
-- Width 384, 12 blocks, 6 heads, MLP 1536, patch 16 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_s16.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 16
HIDDEN_SIZE = 384
DEPTH = 12
NUM_HEADS = 6
MLP_RATIO = 4
