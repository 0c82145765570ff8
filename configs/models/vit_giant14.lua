-- configs/models/vit_giant14.lua: ViT-g/14, "giant" (timm's vit_giant_patch14;
-- Zhai et al. 2022, "Scaling Vision Transformers"), NeMo's g/14: 1011M
-- parameters, the count without the classification head (1,011,202,432);
-- 1,012,611,432 with the 1000-class head.
-- Its MLP is 6144 wide, not 4 x 1408: MLP_RATIO is fractional (48/11) and the
-- MLP size is HIDDEN_SIZE * MLP_RATIO rounded to the nearest integer.
-- Width 1408, 40 blocks, 16 heads, MLP 6144, patch 14 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_giant14.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 14
HIDDEN_SIZE = 1408
DEPTH = 40
NUM_HEADS = 16
MLP_RATIO = 6144 / 1408   -- MLP hidden size 6144
