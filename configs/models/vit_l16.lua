-- configs/models/vit_l16.lua: ViT-L/16 (Dosovitskiy et al. 2021), NeMo's L/16:
-- 304M parameters (304,326,632 with the 1000-class head, as timm's
-- vit_large_patch16_224; 303.3M without the head, the 303 of NeMo's table).
-- Width 1024, 24 blocks, 16 heads, MLP 4096, patch 16 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_l16.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 16
HIDDEN_SIZE = 1024
DEPTH = 24
NUM_HEADS = 16
MLP_RATIO = 4
