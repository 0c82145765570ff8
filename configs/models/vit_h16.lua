-- configs/models/vit_h16.lua: ViT-H/16, NeMo's H/16: 632M parameters
-- (632,199,400 with the 1000-class head; H/14 has as many blocks and patches of
-- 14 x 14, hence a smaller patch embedding).
-- Width 1280, 32 blocks, 16 heads, MLP 5120, patch 16 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_h16.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 16
HIDDEN_SIZE = 1280
DEPTH = 32
NUM_HEADS = 16
MLP_RATIO = 4
