-- configs/models/vit_b16.lua: ViT-B/16 (Dosovitskiy et al. 2021), NeMo's B/16:
-- 86M parameters (86,567,656 with the 1000-class head, as timm's
-- vit_base_patch16_224).
-- Width 768, 12 blocks, 12 heads, MLP 3072, patch 16 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_b16.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 16
HIDDEN_SIZE = 768
DEPTH = 12
NUM_HEADS = 12
MLP_RATIO = 4
