--- lunar.models: models built from a config (Colossal-AI's CAPS keys).
--
--   model = models.vit(cfg)       a ViT with cfg.IMG_SIZE, PATCH_SIZE, IN_CHANS,
--                                 HIDDEN_SIZE, DEPTH, NUM_HEADS, MLP_RATIO,
--                                 NUM_CLASSES, DROPOUT, IMG_DIMS; not materialized
--                                 (and activation_checkpointing / CHECKPOINT)
--   n = models.vit(cfg):num_parameters()      the whole model's parameter count (allocates nothing)
--   f = models.vit_train_flops_per_image(cfg, n)   training FLOPs of one image
local nn = require('lunar.nn')

local models = {}

function models.vit(cfg)
  return nn.ViT{
    img_size = cfg.IMG_SIZE, patch_size = cfg.PATCH_SIZE, in_chans = cfg.IN_CHANS,
    embed_dim = cfg.HIDDEN_SIZE, depth = cfg.DEPTH, num_heads = cfg.NUM_HEADS,
    mlp_ratio = cfg.MLP_RATIO, num_classes = cfg.NUM_CLASSES, ndim = cfg.IMG_DIMS or 2,
    drop = cfg.DROPOUT or 0, seed = cfg.SEED or 0,
    activation_checkpointing = models.activation_checkpointing(cfg),
  }
end

--- The activation checkpointing a config asks for, as nn.ViT's opts take it:
-- {granularity=, method=, num_layers=, blocks=} from the key
-- activation_checkpointing, granularity 'full' when CHECKPOINT = true
-- (Colossal-AI's switch) or a per-block list `blocks` is given; nil: off.
function models.activation_checkpointing(cfg)
  local ac = cfg.activation_checkpointing or {}
  local gran = ac.granularity or ((cfg.CHECKPOINT or ac.blocks) and 'full' or nil)
  if not gran then return nil end
  return {granularity = gran, method = ac.method or 'uniform', num_layers = ac.num_layers or 1, blocks = ac.blocks}
end

--- FLOPs of one training image (forward + backward), the convention of
-- PERF_ANCHORS.md and llm.c's MFU: 6 * params * tokens + 12 * depth * tokens^2 * dim.
function models.vit_train_flops_per_image(cfg, num_params)
  local tokens = (cfg.IMG_SIZE // cfg.PATCH_SIZE) ^ (cfg.IMG_DIMS or 2) + 1
  return 6 * num_params * tokens + 12 * cfg.DEPTH * tokens * tokens * cfg.HIDDEN_SIZE
end

return models
