-- configs/examples/meanpool_head.lua: models as code (config key MODEL). The
-- main job's ViT with two changes, composed from lunar.nn's blocks in Lua
-- without writing a backward: no class token (the tokens are mean-pooled,
-- timm's global_pool='avg') and a two-layer head (Linear, GELU, Linear).
-- Pre-norm blocks as timm's, with timm's parameter names
-- (blocks.3.mlp.fc1.weight, ...), so everything else (init by name, AdamW's
-- weight-decay groups, checkpoints, data parallelism) is as for the ViT.
--   build/lunar examples/train_with_engine.lua --config configs/examples/meanpool_head.lua MAX_STEPS=20
include '../vit_fmnist.lua'

METRICS_FILE = ''

MODEL = function(cfg, nn)
  local C = cfg.HIDDEN_SIZE
  local tokens = (cfg.IMG_SIZE // cfg.PATCH_SIZE) ^ 2 // 1
  local hidden = math.floor(C * cfg.MLP_RATIO + 0.5)
  local blocks = {}
  for i = 1, cfg.DEPTH do
    blocks[i] = nn.Sequential{
      {'', nn.Residual{{'norm1', nn.LayerNorm(C)}, {'attn', nn.Attention(C, cfg.NUM_HEADS)}}},
      {'', nn.Residual{{'norm2', nn.LayerNorm(C)},
        {'mlp', nn.Sequential{{'fc1', nn.Linear(C, hidden)}, {'act', nn.GELU()}, {'fc2', nn.Linear(hidden, C)}}}}},
    }
  end
  return nn.Sequential{
    {'patch_embed', nn.PatchEmbed{img_size = cfg.IMG_SIZE, patch_size = cfg.PATCH_SIZE, in_chans = cfg.IN_CHANS,
      embed_dim = C}},
    {'', nn.PositionEmbedding(tokens, C)},
    {'blocks', nn.Sequential(blocks)},
    {'norm', nn.LayerNorm(C)},
    {'pool', nn.MeanPool()},
    {'head', nn.Sequential{nn.Linear(C, C), nn.GELU(), nn.Linear(C, cfg.NUM_CLASSES)}},
  }
end
