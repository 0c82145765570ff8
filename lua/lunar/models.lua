--- lunar.models: models built from a config (Colossal-AI's CAPS keys).
--
--   model = models.vit(cfg)       a ViT with cfg.IMG_SIZE, PATCH_SIZE, IN_CHANS,
--                                 HIDDEN_SIZE, DEPTH, NUM_HEADS, MLP_RATIO,
--                                 NUM_CLASSES, DROPOUT, IMG_DIMS; not materialized
--                                 (and activation_checkpointing / CHECKPOINT)
--   n = models.vit(cfg):num_parameters()      the whole model's parameter count (allocates nothing)
--   f = models.vit_train_flops_per_image(cfg, n)   training FLOPs of one image
--   model = models.hybrid_vit(cfg, nn)   PhysicsNeMo's HybridViT from lunar.nn's leaves
--                                 (config key MODEL = 'hybrid_vit'); nn: lunar.nn or
--                                 the layer library setup gives a MODEL function
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

--- The builder of the config's model, function(cfg, nn) -> module, for
-- setup.config_model: cfg.MODEL itself when it is a function (models as
-- code), models.hybrid_vit for MODEL = 'hybrid_vit'; nil for the built-in
-- ViT (MODEL nil or 'vit'), which lunar.parallel.vit builds.
function models.builder(cfg)
  local m = cfg.MODEL
  if m == 'hybrid_vit' then return models.hybrid_vit end
  if type(m) == 'function' then return m end
  return nil
end

--- PhysicsNeMo's HybridViT (examples/.../vit: the domain-parallel ViT
-- example), composed from lunar.nn's leaves: a convolutional patch embedding
-- (Conv2d, or Conv3d when IMG_DIMS = 3, kernel = stride = PATCH_SIZE) whose
-- [B, C, h, w] output is flattened to tokens [B, L, C] and normalized
-- (LayerNorm, eps 1e-5), a learned position embedding of the L patches (no
-- class token), DEPTH pre-LN blocks (nn.Block: norm1, attn.qkv, attn.proj,
-- norm2, mlp.fc1, GELU, mlp.fc2; eps 1e-5 as PyTorch's LayerNorm), global
-- average pooling over the tokens (MeanPool) and a linear head. Keys:
-- IMG_SIZE, IMG_DIMS, PATCH_SIZE, IN_CHANS, HIDDEN_SIZE, DEPTH, NUM_HEADS,
-- MLP_RATIO, NUM_CLASSES, DROPOUT. Parameter names: patch_embed.conv.*,
-- patch_embed.norm.*, pos_embed, blocks.i.* (the reference's 'stages'),
-- head.*. With the reference's sizes (patch 8, width 768, 16 blocks, 1000
-- classes, 3 channels) the count is 114,324,712 + 768 * L: 126,907,624 at
-- 1024 x 1024 (L = 128^2; tests/lua/test_hybrid_vit.lua).
-- SHIFTED_PATCHES = s > 0 puts nn.ShiftedPatches(s) before the convolution
-- (patch_embed.shift; the convolution then sees 5 * IN_CHANS channels):
-- Shifted Patch Tokenization's input (Lee et al. 2021), 2D only.
-- STEM_CHANNELS = c > 0 puts a convolutional stem before the patch
-- embedding (patch_embed.stem: a 3 x 3 convolution, stride 1, padding 1, to
-- c channels, then GELU; the convolution then sees c channels): the "early
-- convolutions" of Xiao et al. 2021 (arXiv:2106.14881) and the hybrid
-- input of Dosovitskiy et al. 2021 (a CNN's feature map patchified), 2D only.
-- The same code runs sharded over a domain group (parallel.domain): `nn` is
-- then the library setup.config_model gives, whose PositionEmbedding,
-- Attention/Block and MeanPool are the domain-parallel forms.
-- @param cfg a resolved config
-- @param lib optional module library (default lunar.nn)
-- @return an nn.Sequential, not materialized
function models.hybrid_vit(cfg, lib)
  lib = lib or nn
  local C, P, dims = cfg.HIDDEN_SIZE, cfg.PATCH_SIZE, cfg.IMG_DIMS or 2
  local g = cfg.IMG_SIZE // P
  local L = 1
  for _ = 1, dims do L = L * g end
  local blocks = {}
  for i = 1, cfg.DEPTH do
    blocks[i] = lib.Block{dim = C, num_heads = cfg.NUM_HEADS, mlp_ratio = cfg.MLP_RATIO, eps = 1e-5,
      drop = cfg.DROPOUT or 0, seed = cfg.SEED or 0}
  end
  local shift = cfg.SHIFTED_PATCHES or 0
  if shift > 0 and dims ~= 2 then
    error(string.format('SHIFTED_PATCHES = %d: shifted patches are 2D only (IMG_DIMS = %d)', shift, dims), 0)
  end
  local stem = cfg.STEM_CHANNELS or 0
  if stem > 0 and dims ~= 2 then
    error(string.format('STEM_CHANNELS = %d: the convolutional stem is 2D only (IMG_DIMS = %d)', stem, dims), 0)
  end
  local cin = shift > 0 and 5 * cfg.IN_CHANS or cfg.IN_CHANS
  local embed = {}
  if shift > 0 then embed[#embed + 1] = {'shift', lib.ShiftedPatches(shift)} end
  if stem > 0 then
    embed[#embed + 1] = {'stem', lib.Conv2d(cin, stem, 3, {stride = 1, padding = 1})}
    embed[#embed + 1] = {'stem_act', lib.GELU()}
    cin = stem
  end
  local conv = dims == 3 and lib.Conv3d(cin, C, P) or lib.Conv2d(cin, C, P)
  embed[#embed + 1] = {'conv', conv}
  embed[#embed + 1] = {'flatten', lib.Reshape({C, -1})}     -- [B, C, h, w(, d)] -> [B, C, L]
  embed[#embed + 1] = {'to_tokens', lib.Transpose(2, 3)}    -- -> [B, L, C]
  embed[#embed + 1] = {'norm', lib.LayerNorm(C, 1e-5)}
  local m = lib.Sequential{
    {'patch_embed', lib.Sequential(embed)},
    {'', lib.PositionEmbedding(L, C)},
    {'blocks', lib.Sequential(blocks)},
    {'pool', lib.MeanPool()},
    {'head', lib.Linear(C, cfg.NUM_CLASSES)},
  }
  m.num_tokens = L
  return m
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
