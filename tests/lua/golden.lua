--- tests/lua/golden.lua: the golden file tests/golden/vit_tiny.safetensors
-- (written by tests/golden/gen_golden.py: PyTorch's ViT in f32, its inputs,
-- logits, loss, gradients, one AdamW step and ten losses) and the Lunar model
-- and optimizer its metadata describes, for the golden tests
-- (test_golden.lua, test_golden_cuda.lua, test_bf16.lua).
--
--   local golden = require('golden')
--   local st, num = golden.st, golden.num        -- tensors by name; a metadata number
--   local model = golden.model({precision = 'bf16'})
--   local opt = golden.optimizer(model)
--   local criterion = golden.criterion()
local nn = require('lunar.nn')
local optim = require('lunar.optim')

local golden = {PATH = 'tests/golden/vit_tiny.safetensors'}

local st, meta = lunar.io.load_safetensors(golden.PATH)
if meta.format_version ~= '1' then
  error('golden file ' .. golden.PATH .. ' has format_version ' .. tostring(meta.format_version) ..
    ', expected 1. HINT: regenerate it with /usr/bin/python3 tests/golden/gen_golden.py', 0)
end
golden.st, golden.meta = st, meta

--- The metadata value `k` as a number.
function golden.num(k) return tonumber(meta[k]) end
local num = golden.num

--- Lunar's ViT of the golden shape with PyTorch's initial weights, on the
-- default device. opts.precision: as nn.materialize ('bf16': the working
-- copies are refreshed from the copied masters).
function golden.model(opts)
  local model = nn.ViT{img_size = num('img_size'), patch_size = num('patch_size'), in_chans = num('in_chans'),
    embed_dim = num('dim'), depth = num('depth'), num_heads = num('heads'), mlp_ratio = num('mlp_ratio'),
    num_classes = num('num_classes'), eps = num('ln_eps')}
  nn.materialize(model, 0, {precision = opts and opts.precision})
  for _, p in ipairs(model:parameters()) do
    local g = st['param.' .. p.name]
    assert(g, 'golden file has no parameter ' .. p.name)
    p.param:copy_(g:view(p.shape))
  end
  model:sync_working_weights()   -- precision = 'bf16': the masters were written directly
  return model
end

--- AdamW with the golden file's hyperparameters.
function golden.optimizer(model)
  return optim.AdamW(model:parameters(), {lr = num('lr'), betas = {num('beta1'), num('beta2')}, eps = num('eps'),
    weight_decay = num('weight_decay')})
end

--- The loss of the golden run (cross-entropy with its label smoothing).
function golden.criterion() return nn.CrossEntropy{label_smoothing = num('label_smoothing')} end

return golden
