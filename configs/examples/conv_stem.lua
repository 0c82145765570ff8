-- configs/examples/conv_stem.lua: models as code (config key MODEL). A
-- convolutional stem instead of the one patch projection (Xiao et al. 2021,
-- "Early convolutions help transformers see better", in its simplest form):
-- two stride-2 2x2 convolutions with a GELU between them turn a 28x28 image
-- into 7x7 tokens of width HIDDEN_SIZE (the same grid as PATCH_SIZE = 4),
-- then the built-in (fused) pre-norm blocks and mean pooling.
--   build/lunar examples/train_with_engine.lua --config configs/examples/conv_stem.lua MAX_STEPS=20
include '../vit_fmnist.lua'

METRICS_FILE = ''
DEPTH = 4

MODEL = function(cfg, nn)
  local C = cfg.HIDDEN_SIZE
  local grid = cfg.IMG_SIZE // 4
  local blocks = {}
  for i = 1, cfg.DEPTH do      -- the built-in fused pre-norm block: fused modules compose too
    blocks[i] = nn.Block{dim = C, num_heads = cfg.NUM_HEADS, mlp_ratio = cfg.MLP_RATIO}
  end
  return nn.Sequential{
    {'stem', nn.Sequential{nn.Conv2d(cfg.IN_CHANS, C // 2, 2), nn.GELU(), nn.Conv2d(C // 2, C, 2)}},
    {'tokens', nn.Sequential{nn.Reshape({C, grid * grid}), nn.Transpose(2, 3)}},   -- [B, C, g, g] -> [B, g*g, C]
    {'', nn.PositionEmbedding(grid * grid, C)},
    {'blocks', nn.Sequential(blocks)},
    {'norm', nn.LayerNorm(C)},
    {'pool', nn.MeanPool()},
    {'head', nn.Linear(C, cfg.NUM_CLASSES)},
  }
end
