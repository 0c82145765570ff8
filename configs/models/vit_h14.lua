-- configs/models/vit_h14.lua: ViT-H/14 (Dosovitskiy et al. 2021), NeMo's H/14:
-- 632M parameters (632,045,800 with the 1000-class head, as timm's
-- vit_huge_patch14_224).
-- Width 1280, 32 blocks, 16 heads, MLP 5120, patch 14 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_h14.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 14
HIDDEN_SIZE = 1280
DEPTH = 32
NUM_HEADS = 16
MLP_RATIO = 4
