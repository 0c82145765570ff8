-- configs/examples/vit_composed.lua: models as code (config key MODEL). The
-- main job's ViT itself, composed from lunar.nn's blocks instead of the fused
-- nn.ViT: patch embedding, class token, position table, pre-norm blocks as
-- Sequential{Residual{norm1, attn}, Residual{norm2, mlp}}, final norm,
-- class-token pooling, head. The parameter names are timm's, so the weights
-- are drawn as the built-in ViT's and the two train alike
-- (tests/lua/test_models_as_code.lua checks loss and gradients); a starting
-- point for changing one piece of the ViT.
--   build/lunar examples/train_with_engine.lua --config configs/examples/vit_composed.lua MAX_STEPS=20
include '../vit_fmnist.lua'

MODEL = function(cfg, nn)
  local C = cfg.HIDDEN_SIZE
  local blocks = {}
  for i = 1, cfg.DEPTH do
    blocks[i] = nn.Sequential{
      {'', nn.Residual{{'norm1', nn.LayerNorm(C)}, {'attn', nn.Attention(C, cfg.NUM_HEADS)}}},
      {'', nn.Residual{{'norm2', nn.LayerNorm(C)}, {'mlp', nn.MLP(C, math.floor(C * cfg.MLP_RATIO + 0.5))}}},
    }
  end
  local tokens = (cfg.IMG_SIZE // cfg.PATCH_SIZE) ^ 2 // 1 + 1
  return nn.Sequential{
    {'patch_embed', nn.PatchEmbed{img_size = cfg.IMG_SIZE, patch_size = cfg.PATCH_SIZE, in_chans = cfg.IN_CHANS,
      embed_dim = C}},
    {'', nn.ClassToken(C)},
    {'', nn.PositionEmbedding(tokens, C)},
    {'blocks', nn.Sequential(blocks)},
    {'norm', nn.LayerNorm(C)},
    {'pool', nn.SelectToken(1)},
    {'head', nn.Linear(C, cfg.NUM_CLASSES)},
  }
end
