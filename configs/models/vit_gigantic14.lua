-- configs/models/vit_gigantic14.lua: ViT-G/14, "gigantic" (timm's
-- vit_gigantic_patch14; Zhai et al. 2022, "Scaling Vision Transformers"),
-- NeMo's G/14: 1843M parameters, the count without the classification head
-- (1,842,775,680); 1,844,440,680 with the 1000-class head.
-- Its MLP is 8192 wide, not 4 x 1664: MLP_RATIO is fractional (64/13) and the
-- MLP size is HIDDEN_SIZE * MLP_RATIO rounded to the nearest integer.
-- Width 1664, 48 blocks, 16 heads, MLP 8192, patch 14 on 224 x 224 RGB images,
-- 1000 classes (ImageNet-1k). A recipe includes it and adds data, the
-- `parallel` dict and hyperparameters (configs/recipes/).
--   build/lunar config show configs/models/vit_gigantic14.lua [key=value ...]
IMG_SIZE = 224
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 14
HIDDEN_SIZE = 1664
DEPTH = 48
NUM_HEADS = 16
MLP_RATIO = 8192 / 1664   -- MLP hidden size 8192
