-- configs/models/vit_ti16.lua: ViT-Ti/16 (DeiT-Ti, Touvron et al. 2021; timm's
-- vit_tiny_patch16_224), not in NeMo's table: width, depth and heads as timm.
-- 5,717,416 parameters with the 1000-class head (5.7M).
-- Width 192, 12 blocks, 3 heads, MLP 768, patch 16 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_ti16.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 16
HIDDEN_SIZE = 192
DEPTH = 12
NUM_HEADS = 3
MLP_RATIO = 4
