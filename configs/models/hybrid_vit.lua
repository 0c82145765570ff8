-- configs/models/hybrid_vit.lua: PhysicsNeMo's HybridViT (the domain-parallel
-- ViT example): a convolutional patch embedding (kernel = stride = 8) with
-- LayerNorm, a learned position embedding, no class token, 16 pre-LN blocks
-- of width 768 (12 heads, MLP 3072), global average pooling, a 1000-class
-- head (lunar.models.hybrid_vit). The image size sets the position
-- embedding (768 per patch): at 1024 x 1024 (128 x 128 patches) the model has
-- the reference's 126,907,624 parameters. IMG_DIMS = 3 gives the 3D variant
-- (Conv3d, volumes of IMG_SIZE^3). A recipe includes it and adds data and the
-- `parallel` dict (e.g. parallel = {domain = 4}).
--   build/lunar config show configs/models/hybrid_vit.lua [key=value ...]
MODEL = 'hybrid_vit'
IMG_SIZE = 1024
IMG_DIMS = 2
IN_CHANS = 3
NUM_CLASSES = 1000
PATCH_SIZE = 8
HIDDEN_SIZE = 768
DEPTH = 16
NUM_HEADS = 12
MLP_RATIO = 4
