--- lunar.timm: timm (pytorch-image-models) ViT weights in safetensors, both ways.
--
--   local timm = require('lunar.timm')
--   local report = timm.load_pretrained(model, 'vit_tiny.safetensors', {num_classes = 10})
--   timm.export(model, 'lunar_vit.safetensors')     -- timm: model.load_state_dict(
--                                                   --   safetensors.torch.load_file(path))
--
-- Lunar's ViT keeps timm's parameter names and layouts (DESIGN.md):
-- patch_embed.proj.weight [E, C, P, P] (Conv2d), patch_embed.proj.bias [E],
-- cls_token [1, 1, E], pos_embed [1, 1 + (S/P)^2, E] (class token first),
-- blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias}
-- (Linear weights [out, in]; qkv rows q, k, v), norm.{weight, bias},
-- head.{weight, bias} [K, E] - timm's VisionTransformer with its defaults
-- (class token, global_pool 'token', qkv_bias, LayerNorm eps 1e-6, no
-- layer scale, no fc_norm), so the names map one to one.
--
-- load_pretrained(model, path, opts) -> {loaded=, skipped={names}, unexpected={names}}
--   Reads every parameter of `model` (this rank's part: a tensor-parallel
--   shard takes its pieces, a pipeline stage its own parameters) from the
--   file, converting F16/BF16/F64 to the parameter's dtype. When the file's
--   head has another class count than the model (fine-tuning on another
--   dataset), head.weight and head.bias are skipped, kept at their init, and
--   a message says so (opts.log, default lunar.log.info). Refused, with the
--   file and the tensor named and nothing changed: a file that is not valid
--   safetensors, a missing tensor, a tensor of another shape, a tensor that
--   the model does not have (timm options Lunar lacks, such as fc_norm or
--   layer scale; opts.strict = false ignores them).
--   opts.num_classes, when given, must equal the model's class count.
--   Another resolution (fine-tuning at 384 from a checkpoint trained at 224,
--   NeMo's recipe): a pos_embed [1, 1 + g^2, E] of another square grid g is
--   resampled to the model's grid as timm's resample_abs_pos_embed
--   (timm/layers/pos_embed.py) does: the class token kept, the grid
--   [g, g, E] resized by F.interpolate(mode='bicubic', align_corners=False,
--   antialias=true) (lunar.ops.resize_bicubic, on the CPU, in f32), and a
--   message says so. opts.antialias = false resizes without antialias (as
--   timm's antialias=False). Refused, naming both shapes: another embedding
--   width, a grid that is not square, a 3-D patch grid.
-- export(model, path, opts) writes the whole model's parameters by timm name,
--   F32, contiguous, no other keys, metadata {format = 'pt'} (as timm's
--   save). With opts.grid (lunar.parallel) and several ranks, the shards and
--   stages are gathered (collective: every rank calls it) and rank 0 writes.
local log = require('lunar.log')
local checkpoint = require('lunar.checkpoint')

local timm = {}

local shape_str, same_shape = checkpoint.shape_str, checkpoint.same_shape

local FLOAT = {F32 = true, F16 = true, BF16 = true, F64 = true}

local pos_embed_grids, resample_pos_embed, narrow_to

--- The whole model's parameter names (a pipeline stage or tensor shard model
-- rebuilt without them, no storage), as parallel.gather_full_parameters.
local function whole_model_names(model)
  local specs
  if model.opts and (model.opts.stage or model.opts.tp) then
    local plain = {}
    for k, v in pairs(model.opts) do plain[k] = v end
    plain.tp, plain.stage = nil, nil
    specs = getmetatable(model)(plain):parameters()
  else
    specs = model:parameters()
  end
  local names = {}
  for _, p in ipairs(specs) do names[p.name] = true end
  return names
end

--- The side of a square number, or nil.
local function square_side(n)
  local g = math.floor(math.sqrt(n) + 0.5)
  if g * g == n then return g end
end

--- A file's pos_embed `from` [1, 1 + g^2, E] resampled to the model's `to`
-- [1, 1 + g'^2, E]: {old = g, new = g', from =, to =}, or nil and why not.
pos_embed_grids = function(model, from, to)
  if #from ~= 3 or #to ~= 3 or from[1] ~= 1 or to[1] ~= 1 or from[2] < 2 then
    return nil, 'not a [1, 1 + grid, E] position embedding'
  end
  if from[3] ~= to[3] then return nil, string.format('embedding width %d against %d: another model', from[3], to[3]) end
  if model.patch_embed and model.patch_embed.ndim == 3 then
    return nil, 'a 3-D patch grid: only 2-D grids are resampled'
  end
  local old, new = square_side(from[2] - 1), square_side(to[2] - 1)
  if not old or not new then
    return nil, string.format('%d and %d grid tokens after the class token: only square grids are resampled',
      from[2] - 1, to[2] - 1)
  end
  return {old = old, new = new, from = from, to = to}
end

--- timm's resample_abs_pos_embed (num_prefix_tokens 1, bicubic, align_corners
-- False) on the CPU in f32: pe [1, 1 + g^2, E] (any float dtype; freed) ->
-- a new f32 tensor [1, 1 + g'^2, E].
resample_pos_embed = function(pe, rs, antialias)
  local E = rs.from[3]
  local f = pe:to('f32')   -- always a copy
  pe:free()
  local grid = f:narrow(2, 2, rs.old * rs.old):contiguous():reshape({rs.old, rs.old, E})
  local resized = lunar.ops.resize_bicubic(grid, rs.new, rs.new, antialias)
  local out = lunar.empty({1, 1 + rs.new * rs.new, E}, 'f32', 'cpu')
  out:narrow(2, 1, 1):copy_(f:narrow(2, 1, 1))   -- the class token, unchanged
  out:narrow(2, 2, rs.new * rs.new):copy_(resized:reshape({1, rs.new * rs.new, E}))
  resized:free()
  grid:free()
  f:free()
  return out
end

--- t narrowed to 0-based ranges {{start, len}, ...}.
narrow_to = function(t, ranges)
  for d, rg in ipairs(ranges) do
    if rg[1] ~= 0 or rg[2] ~= t:size(d) then t = t:narrow(d, rg[1] + 1, rg[2]) end
  end
  return t
end

--- Loads a timm ViT checkpoint (safetensors) into `model`; see the module doc.
function timm.load_pretrained(model, path, opts)
  opts = opts or {}
  local say = opts.log or function(s) log.info('%s', s) end
  assert(type(path) == 'string', 'timm.load_pretrained: path must be a string')
  local ok, r = pcall(lunar.io.open_safetensors, path)
  if not ok then error('timm.load_pretrained: ' .. tostring(r), 0) end
  local function bad(fmt, ...)
    r:close()
    error(string.format('timm.load_pretrained: %s: ' .. fmt, path, ...), 0)
  end
  local params = model:parameters()
  local by_name = {}
  for _, p in ipairs(params) do
    if not p.param then bad('parameter %s has no storage (materialize the model first)', p.name) end
    by_name[p.name] = p
  end
  -- the head: replaced when the class count differs
  local skip = {}
  local model_classes = model.num_classes
  if opts.num_classes and model_classes and opts.num_classes ~= model_classes then
    bad('num_classes %d, but the model has %d classes (build it with NUM_CLASSES=%d)', opts.num_classes,
      model_classes, opts.num_classes)
  end
  local hw = r:info('head.weight')
  if hw and model_classes and hw.shape[1] ~= model_classes then
    skip['head.weight'], skip['head.bias'] = true, true
    say(string.format("timm: %s has a head of %d classes, the model %d: head.weight and head.bias are kept at " ..
      'their initialization (fine-tuning)', path, hw.shape[1], model_classes))
  end
  -- unexpected tensors
  local names = whole_model_names(model)
  local unexpected = {}
  for _, n in ipairs(r:names()) do
    if not names[n] and not skip[n] then unexpected[#unexpected + 1] = n end
  end
  if #unexpected > 0 and opts.strict ~= false then
    bad("tensor '%s' is not a parameter of this ViT%s (a timm option Lunar's ViT does not have; strict = false " ..
      'ignores it)', unexpected[1], #unexpected > 1 and string.format(' (and %d more)', #unexpected - 1) or '')
  end
  -- check everything, then read into temporaries
  local plan = {}
  for _, p in ipairs(params) do
    if not skip[p.name] then
      local info = r:info(p.name)
      if not info then bad("no tensor '%s' (a parameter of the model)", p.name) end
      local pc = checkpoint.pieces(p)
      local resample
      if not same_shape(info.shape, pc.full_shape) then
        local why
        if p.name == 'pos_embed' then resample, why = pos_embed_grids(model, info.shape, pc.full_shape) end
        if not resample then
          bad("tensor '%s' is %s in the file, %s in the model%s", p.name, shape_str(info.shape),
            shape_str(pc.full_shape), why and (' (' .. why .. ')') or '')
        end
      end
      if not FLOAT[info.dtype] then bad("tensor '%s' is %s, not a floating-point type", p.name, info.dtype) end
      plan[#plan + 1] = {p = p, pc = pc, resample = resample}
    end
  end
  local temps = {}
  local okr, err = pcall(function()
    for i, it in ipairs(plan) do
      local p = it.p
      local tmp = lunar.empty(p.shape, p.param:dtype(), 'cpu')
      local whole = it.resample and resample_pos_embed(r:read(p.name), it.resample, opts.antialias ~= false)
      for _, piece in ipairs(it.pc.pieces) do
        local block = whole and narrow_to(whole, piece.full):contiguous() or r:read(p.name, piece.full)
        local dst = tmp
        for d, rg in ipairs(piece['local']) do
          if rg[1] ~= 0 or rg[2] ~= dst:size(d) then dst = dst:narrow(d, rg[1] + 1, rg[2]) end
        end
        dst:copy_(block)    -- converts the dtype
        block:free()
      end
      if whole then
        whole:free()
        say(string.format('timm: %s: pos_embed resampled from a %dx%d to a %dx%d grid (%s -> %s: bicubic%s, the ' ..
          "class token kept, as timm's resample_abs_pos_embed)", path, it.resample.old, it.resample.old,
          it.resample.new, it.resample.new, shape_str(it.resample.from), shape_str(it.resample.to),
          opts.antialias ~= false and ', antialiased' or ''))
      end
      temps[i] = tmp
    end
  end)
  r:close()
  if not okr then
    for _, t in pairs(temps) do t:free() end
    error('timm.load_pretrained: ' .. tostring(err), 0)
  end
  for i, it in ipairs(plan) do
    it.p.param:copy_(temps[i])
    temps[i]:free()
  end
  if model.sync_working_weights then model:sync_working_weights() end   -- precision = 'bf16': the working copy
  local skipped = {}
  for n in pairs(skip) do if by_name[n] then skipped[#skipped + 1] = n end end
  table.sort(skipped)
  return {loaded = #plan, skipped = skipped, unexpected = unexpected}
end

--- Writes the model's parameters as a timm state_dict in safetensors; see
-- the module doc. Returns path (on the writing rank).
function timm.export(model, path, opts)
  opts = opts or {}
  assert(type(path) == 'string' and path ~= '', 'timm.export: path must be a non-empty string')
  local g = opts.grid
  local tensors = {}
  if g and g.world_size > 1 then
    local full = require('lunar.parallel').gather_full_parameters(model, g)
    if g.rank ~= 0 then
      for _, t in pairs(full) do t:free() end
      return nil
    end
    tensors = full
  else
    for _, p in ipairs(model:parameters()) do
      if p.shard then
        error('timm.export: ' .. p.name .. ' is a tensor-parallel shard: pass opts.grid so the shards are gathered', 2)
      end
      if not p.param then error('timm.export: parameter ' .. p.name .. ' has no storage', 2) end
      tensors[p.name] = p.param
    end
    if model.opts and model.opts.stage then
      error('timm.export: the model is one pipeline stage: pass opts.grid so the stages are gathered', 2)
    end
  end
  for name, t in pairs(tensors) do
    if t:device() ~= 'cpu' then t = t:to('cpu') end
    if t:dtype() ~= 'f32' then t = t:to('f32') end
    tensors[name] = t
  end
  lunar.io.save_safetensors(path, tensors, {format = 'pt'})
  return path
end

return timm
