-- configs/examples/postnorm.lua: models as code (config key MODEL). A
-- post-norm transformer (the original of Vaswani et al. 2017 and BERT):
-- x = norm1(x + attn(x)); x = norm2(x + mlp(x)), with class-token pooling as
-- the ViT. Only the block's order differs from the built-in pre-norm ViT.
--   build/lunar examples/train_with_trainer.lua --config configs/examples/postnorm.lua MAX_STEPS=20
include '../vit_fmnist.lua'

METRICS_FILE = ''
DEPTH = 4

MODEL = function(cfg, nn)
  local C = cfg.HIDDEN_SIZE
  local tokens = (cfg.IMG_SIZE // cfg.PATCH_SIZE) ^ 2 // 1 + 1
  local hidden = math.floor(C * cfg.MLP_RATIO + 0.5)
  local blocks = {}
  for i = 1, cfg.DEPTH do
    blocks[i] = nn.Sequential{
      {'', nn.Residual{{'attn', nn.Attention(C, cfg.NUM_HEADS)}}},
      {'norm1', nn.LayerNorm(C)},
      {'', nn.Residual{{'mlp', nn.MLP(C, hidden)}}},
      {'norm2', nn.LayerNorm(C)},
    }
  end
  return nn.Sequential{
    {'patch_embed', nn.PatchEmbed{img_size = cfg.IMG_SIZE, patch_size = cfg.PATCH_SIZE, in_chans = cfg.IN_CHANS,
      embed_dim = C}},
    {'', nn.ClassToken(C)},
    {'', nn.PositionEmbedding(tokens, C)},
    {'blocks', nn.Sequential(blocks)},
    {'pool', nn.SelectToken(1)},
    {'head', nn.Linear(C, cfg.NUM_CLASSES)},
  }
end
