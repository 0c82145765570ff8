-- Tests of models as code (lua/lunar/nn: Sequential, Residual, Identity,
-- Concat, the small leaves, nn.gradcheck, a config's MODEL). Expected values
-- come from central finite differences (nn.gradcheck), PyTorch (float64
-- goldens, tests/golden/gen_leaves.py), hand arithmetic (stated in comments)
-- and the built-in fused modules where a composition must equal them.
--   build/lunar tests/lua/test_models_as_code.lua
local T = require('harness')
local nn = require('lunar.nn')
local ops = lunar.ops

local function randn(shape, name, std)
  return lunar.empty(shape):normal_(7, name, 0, std or 1)
end

local names = T.param_names

-- gradcheck passes, and names the worst element
local function check(m, x, opts)
  local rep = nn.gradcheck(m, x, opts)
  T.truthy(rep.ok, rep.message)
  T.truthy(rep.checked > 0, 'gradcheck checked elements: ' .. rep.message)
  T.eq(rep.dtype, 'f64', 'checked in float64: ' .. rep.message)
  return rep
end

-- gradcheck ----------------------------------------------------------------------------

T.test('gradcheck: passes a correct Linear and names the worst element of a wrong backward', function()
  local m = nn.Linear(4, 3)
  local rep = check(m, randn({2, 4}, 'gc.x'))
  -- input (8) + weight (12) + bias (3) elements, all checked (each below max_elements)
  T.eq(rep.checked, 8 + 12 + 3)
  T.eq(#rep.tensors, 3)
  T.eq(rep.tensors[2].name, 'weight')
  -- a backward that forgets the bias gradient: fails on 'bias'
  local Bad = require('lunar.class')('BadLinear', nn.Linear)
  function Bad:backward(ctx, dy, need_dx)
    local dx = nn.Linear.backward(self, ctx, dy, need_dx)
    self.grad_bias:zero_()
    return dx
  end
  local bad = Bad(4, 3)
  local rep2 = nn.gradcheck(bad, randn({2, 4}, 'gc.x'))
  T.falsy(rep2.ok, 'a backward without the bias gradient fails')
  T.eq(rep2.worst.tensor, 'bias')
  T.truthy(rep2.message:find('worst bias%[') and rep2.message:find('FAILED'), rep2.message)
  -- a backward with dx scaled by 2: fails on the input
  local Bad2 = require('lunar.class')('BadLinear2', nn.Linear)
  function Bad2:backward(ctx, dy, need_dx) return ops.scale_(nn.Linear.backward(self, ctx, dy, need_dx), 2) end
  local rep3 = nn.gradcheck(Bad2(4, 3), randn({2, 4}, 'gc.x'), {params = false})
  T.falsy(rep3.ok, 'dx scaled by 2 fails')
  T.eq(rep3.worst.tensor, 'input')
end)

-- leaves -------------------------------------------------------------------------------

T.test('leaves: gradcheck of GELU (exact, tanh), SiLU, ReLU, RMSNorm, MeanPool, ClassToken, PositionEmbedding, Reshape, Transpose, Conv2d, Identity', function()
  check(nn.GELU(), randn({2, 3, 4}, 'gelu.x'))
  check(nn.GELU{approximate = 'tanh'}, randn({2, 3, 4}, 'gelut.x'))
  check(nn.SiLU(), randn({2, 3, 4}, 'silu.x'))
  -- ReLU: no element within eps of the kink at 0 (central differences straddle it there)
  local xr = randn({2, 3, 4}, 'relu.x')
  local far = (xr * xr) + 0.1        -- >= 0.1 everywhere
  local signs = lunar.tensor({1, -1, 1, -1, -1, 1, 1, -1, 1, 1, -1, -1, 1, -1, 1, -1, -1, 1, 1, -1, 1, 1, -1, -1}):view(2, 3, 4)
  check(nn.ReLU(), far * signs)
  check(nn.MeanPool(), randn({2, 5, 3}, 'mp.x'))
  check(nn.ClassToken(3), randn({2, 4, 3}, 'ct.x'))
  check(nn.PositionEmbedding(4, 3), randn({2, 4, 3}, 'pe.x'))
  check(nn.Reshape({-1}), randn({2, 3, 4}, 'rs.x'))
  check(nn.Transpose(2, 3), randn({2, 3, 4}, 'tr.x'))
  check(nn.Conv2d(2, 3, 2), randn({2, 2, 4, 6}, 'conv.x'))
  check(nn.Conv2d(2, 3, 3, {stride = 1, padding = 1}), randn({2, 2, 4, 5}, 'conv_same.x'), {max_elements = 64})
  check(nn.Conv3d(2, 3, 2), randn({2, 2, 4, 2, 6}, 'conv3.x'), {max_elements = 64})
  check(nn.Identity(), randn({2, 3}, 'id.x'))
  check(nn.LayerNorm(4), randn({2, 3, 4}, 'ln.x'))
  local rms = nn.materialize(nn.RMSNorm(4), 1)
  rms.weight:copy_(lunar.tensor({0.5, 1.5, -1, 2}))   -- not all ones: the weight's own gradient path
  check(rms, randn({2, 3, 4}, 'rms.x'))
end)

T.test('leaves: forward values by hand', function()
  -- ReLU(-2, 0, 3) = 0, 0, 3; SiLU(1) = 1/(1+e^-1) = 0.7310585786300049; tanh GELU(1) =
  -- 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.8411919906082768 (Python math, double)
  local a = lunar.tensor({-2, 0, 3, 1})
  local r, cr = nn.ReLU():forward(a); cr:free()
  T.eq(table.concat(r:totable(), ','), '0.0,0.0,3.0,1.0')
  local s1, cs = nn.SiLU():forward(a); cs:free()
  T.near(s1:totable()[4], 0.7310585786300049, 1e-6, 0)
  local g1, cg = nn.GELU{approximate = 'tanh'}:forward(a); cg:free()
  T.near(g1:totable()[4], 0.8411919906082768, 1e-6, 0)
  -- RMSNorm of the row (3, 4), weight ones, eps 0: mean square 12.5, so (3, 4) / sqrt(12.5)
  -- = (0.848528137423857, 1.131370849898476)
  local rn = nn.materialize(nn.RMSNorm(2, 0), 1)
  local ry, crn = rn:forward(lunar.tensor({{3, 4}})); crn:free()
  T.near(ry:totable()[1][1], 0.848528137423857, 1e-6, 0)
  T.near(ry:totable()[1][2], 1.131370849898476, 1e-6, 0)
  -- MeanPool: tokens 1, 2, 6 -> mean 3 (channel 1); 0, 0, 3 -> 1 (channel 2)
  local x = lunar.tensor({{{1, 0}, {2, 0}, {6, 3}}})
  local y, c = nn.MeanPool():forward(x)
  c:free()
  T.eq(table.concat(y:shape(), ','), '1,2')
  T.near(y:view(-1)[1], 3, 1e-6, 0); T.near(y:view(-1)[2], 1, 1e-6, 0)
  -- ClassToken: the token first, the input after it
  local ct = nn.materialize(nn.ClassToken(2), 1)
  ct.cls_token:copy_(lunar.tensor({{{5, 7}}}))
  local z, c2 = ct:forward(x)
  c2:free()
  T.eq(table.concat(z:shape(), ','), '1,4,2')
  T.eq(table.concat(z:view(-1):totable(), ','), '5.0,7.0,1.0,0.0,2.0,0.0,6.0,3.0')
  -- PositionEmbedding: x + pos broadcast over the batch; x unchanged
  local pe = nn.materialize(nn.PositionEmbedding(3, 2), 1)
  pe.pos_embed:copy_(lunar.tensor({{{1, 1}, {2, 2}, {3, 3}}}))
  local x2 = lunar.tensor({{{1, 0}, {2, 0}, {6, 3}}, {{0, 0}, {0, 0}, {0, 0}}})
  local w, c3 = pe:forward(x2)
  c3:free()
  T.eq(table.concat(w:view(-1):totable(), ','), '2.0,1.0,4.0,2.0,9.0,6.0,1.0,1.0,2.0,2.0,3.0,3.0')
  T.eq(x2:sum(), 12.0, 'the input is not changed')
  -- a batch of 5 (the table repeated 1 + 1 + 2 + 1 times): image b holds 10 b, so y[b, i, :] = 10 b + i
  local x5 = lunar.zeros({5, 3, 2})
  for b = 1, 5 do local v = x5:select(1, b); v:fill_(10 * b); v:free() end
  local w5, c5 = pe:forward(x5)
  c5:free()
  local want = {}
  for b = 1, 5 do for i = 1, 3 do for _ = 1, 2 do want[#want + 1] = 10 * b + i end end end
  T.eq(w5:view(-1):totable(), want)
  -- Conv2d with kernel = stride = 2 of a 1-channel 2x4 image of ones, weight all 1, bias 0.5:
  -- each output is the sum of a 2x2 block (4) + 0.5, output [1, 1, 1, 2]
  local conv = nn.materialize(nn.Conv2d(1, 1, 2), 1)
  conv.weight:fill_(1); conv.bias:fill_(0.5)
  local o, c4 = conv:forward(lunar.ones({1, 1, 2, 4}))
  c4:free()
  T.eq(table.concat(o:shape(), ','), '1,1,1,2')
  T.eq(table.concat(o:view(-1):totable(), ','), '4.5,4.5')
end)

T.test('leaves: bad input names the module path and the shapes', function()
  local m = nn.Sequential{{'stem', nn.Conv2d(3, 8, 4)}, {'pool', nn.MeanPool()}}
  nn.materialize(m, 1)
  T.raises(function() m:forward(lunar.zeros({2, 1, 8, 8})) end, 'stem %(Conv2d%).*expected %[B, 3, H, W%], got %[2, 1, 8, 8%]')
  T.raises(function() nn.Conv2d(3, 8, 4, {stride = 2}) end, 'nn.Conv2d: only stride = kernel_size')
  T.raises(function() nn.Conv2d(3, 8, 3, {stride = 1, padding = 3}) end, 'or stride 1 with padding 0..k%-1')
  T.raises(function() nn.Conv3d(3, 8, 3, {stride = 1, padding = 1}) end, 'nn.Conv3d: only stride = kernel_size')
  T.raises(function() nn.Conv3d(3, 8, 4, {padding = 1}) end, 'nn.Conv3d: only stride = kernel_size')
  local c3 = nn.materialize(nn.Conv3d(1, 2, 2), 1)
  T.raises(function() c3:forward(lunar.zeros({1, 1, 4, 4})) end, '%(Conv3d%).*expected %[B, 1, D, H, W%], got %[1, 1, 4, 4%]')
  T.raises(function() nn.GELU{approximate = 'erf'} end, "approximate must be 'none' or 'tanh'")
  T.raises(function() nn.Sequential{nn.Linear(2, 2), 'oops'} end, 'entry 2 must be a module or {name, module}, got string')
  T.raises(function() nn.Sequential{{'forward', nn.Linear(2, 2)}} end, "child name 'forward' is taken")
  local r = nn.materialize(nn.Residual(nn.Linear(4, 3)), 1)
  T.raises(function() r:forward(lunar.zeros({2, 4})) end, 'f%(x%) must have the shape of x: expected %[2, 4%], got %[2, 3%]')
end)

T.test('containers: bad input deep in a composed model names the leaf path and both shapes', function()
  -- four pre-norm blocks of width 8; block 3's MLP was written for width 16
  local C = 8
  local blocks = {}
  for i = 1, 4 do
    local mlp_in = i == 4 and 16 or C
    blocks[i] = nn.Sequential{
      {'', nn.Residual{{'norm1', nn.LayerNorm(C)}, {'attn', nn.Attention(C, 2)}}},
      {'', nn.Residual{{'mlp', nn.Sequential{{'fc1', nn.Linear(mlp_in, 16)}, {'act', nn.GELU()},
        {'fc2', nn.Linear(16, C)}}}}},
    }
  end
  local m = nn.materialize(nn.Sequential{{'blocks', nn.Sequential(blocks)}, {'head', nn.Linear(C, 2)}}, 1)
  T.raises(function() m:forward(randn({2, 5, C}, 'bad.x')) end,
    '^blocks%.3%.mlp%.fc1 %(Linear%): input features: expected %[%*, 16%], got %[2, 5, 8%]$')
  -- the wrong width at the input: the first leaf that reads it
  T.raises(function() m:forward(randn({2, 5, 7}, 'bad.x7')) end,
    '^blocks%.0%.norm1 %(LayerNorm%): normalized dim: expected %[%*, 8%], got %[2, 5, 7%]$')
  -- tokens without a batch dim: the attention says so (it was the kernel's message without a path)
  local a = nn.materialize(nn.Sequential{{'blocks', nn.Sequential{nn.Sequential{{'attn', nn.Attention(C, 2)}}}}}, 1)
  T.raises(function() a:forward(lunar.zeros({5, C})) end,
    '^blocks%.0%.attn %(Attention%): tokens: expected %[B, N, 8%], got %[5, 8%]$')
  -- a leaf that does not check its input: the op's own error, prefixed by the container with the
  -- leaf's path, class and input shape
  local Raw = require('lunar.class')('RawAttention', nn.Module)
  function Raw:forward(x) return ops.attention(x, 2) end
  local r = nn.materialize(nn.Sequential{{'stage', nn.Concat(3, {{'raw', Raw()}})}}, 1)
  T.raises(function() r:forward(lunar.zeros({5, 6})) end, '^stage%.raw %(RawAttention%): input %[5, 6%]: .*attention')
  -- the same error one level down keeps its single prefix
  local ok, msg = pcall(r.forward, r, lunar.zeros({5, 6}))
  T.falsy(ok)
  local _, n = msg:gsub('%(RawAttention%)', '')
  T.eq(n, 1, 'the leaf is named once: ' .. msg)
end)

-- containers ---------------------------------------------------------------------------

T.test('containers: parameter names by path, inlined children, timm names', function()
  local mlp = nn.Sequential{{'fc1', nn.Linear(4, 8)}, {'act', nn.GELU()}, {'fc2', nn.Linear(8, 4)}}
  local blocks = nn.Sequential{nn.Sequential{{'', nn.Residual{{'norm2', nn.LayerNorm(4)}, {'mlp', mlp}}}}}
  local m = nn.Sequential{{'', nn.ClassToken(4)}, {'', nn.PositionEmbedding(3, 4)}, {'blocks', blocks},
    {'norm', nn.LayerNorm(4)}, {'pool', nn.MeanPool()}, {'head', nn.Linear(4, 2)}}
  T.eq(names(m), 'cls_token pos_embed blocks.0.norm2.weight blocks.0.norm2.bias blocks.0.mlp.fc1.weight ' ..
    'blocks.0.mlp.fc1.bias blocks.0.mlp.fc2.weight blocks.0.mlp.fc2.bias norm.weight norm.bias head.weight head.bias')
  local s = nn.Sequential{nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)}
  T.eq(names(s), '0.weight 0.bias 2.weight 2.bias')
  nn.materialize(m, 3)
  T.eq(m.blocks['0'].path, 'blocks.0')
  T.eq(mlp.fc1.path, 'blocks.0.mlp.fc1')
  -- init by name: the same name in another composition gets the same values
  local lone = nn.Sequential{{'head', nn.Linear(4, 2)}}
  nn.materialize(lone, 3)
  T.eq(lone.head.weight:totable()[2][3], m.head.weight:totable()[2][3], 'head.weight drawn from (seed, name)')
end)

T.test('containers: gradcheck of Sequential, Residual, Concat, nested, with identities', function()
  check(nn.Sequential{nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2)}, randn({2, 3}, 'seq.x'))
  check(nn.Residual{nn.LayerNorm(4), nn.Linear(4, 4)}, randn({2, 3, 4}, 'res.x'))
  check(nn.Residual(nn.Identity()), randn({2, 3}, 'resid.x'))   -- y = 2x, dx = 2 dy
  check(nn.Sequential{nn.Identity(), nn.Linear(3, 3), nn.Identity()}, randn({2, 3}, 'seqid.x'))
  check(nn.Concat(2, {nn.Linear(3, 2), nn.Identity(), nn.Sequential{nn.Linear(3, 4), nn.GELU()}}),
    randn({2, 3}, 'cat.x'))
  check(nn.Concat(3, {nn.Linear(4, 2), nn.Linear(4, 3)}), randn({2, 3, 4}, 'cat3.x'))
  check(nn.Sequential{nn.Conv2d(1, 4, 2), nn.Reshape({4, -1}), nn.Transpose(2, 3), nn.ClassToken(4),
    nn.PositionEmbedding(5, 4), nn.Residual{nn.LayerNorm(4), nn.Linear(4, 4), nn.GELU()}, nn.MeanPool(),
    nn.Linear(4, 3)}, randn({2, 1, 4, 4}, 'stem.x'))
end)

T.test('containers: nn.Parallel (torch/nn): child i on slice i, outputs concatenated; by hand and gradcheck', function()
  -- x [2, 2, 3]: child '0' (Linear 3 -> 2) reads x[:, 1, :], child '1' (Identity) x[:, 2, :]; cat along 2
  local p = nn.materialize(nn.Parallel(2, 2, {nn.Linear(3, 2), nn.Identity()}), 1)
  p['0'].weight:copy_(lunar.tensor({{1, 0, -1}, {0.5, 0.5, 0.5}}))
  p['0'].bias:copy_(lunar.tensor({0.1, -0.2}))
  local x = lunar.tensor({{{1, 2, 3}, {4, 5, 6}}, {{7, 8, 9}, {10, 11, 12}}})
  local y, ctx = p:forward(x)
  -- by hand: [1 - 3 + 0.1, (1 + 2 + 3)/2 - 0.2] = [-1.9, 2.8], then 4 5 6; [7 - 9 + 0.1, 12 - 0.2] = [-1.9, 11.8], then 10 11 12
  local want = {{-1.9, 2.8, 4, 5, 6}, {-1.9, 11.8, 10, 11, 12}}
  T.eq(table.concat(y:shape(), ','), '2,5')
  local got = y:totable()
  for b = 1, 2 do for j = 1, 5 do T.near(got[b][j], want[b][j], 1e-6, 0, 'y[' .. b .. '][' .. j .. ']') end end
  p:zero_grad()
  local dx = p:backward(ctx, lunar.ones({2, 5}))
  -- dy = 1: dx[:, 1, :] = W^T [1, 1] = [1.5, 0.5, -0.5], dx[:, 2, :] = 1; dW rows = x[1,1,:] + x[2,1,:] = [8, 10, 12], db = [2, 2]
  local g = dx:totable()
  for b = 1, 2 do
    for j, v in ipairs({1.5, 0.5, -0.5}) do T.near(g[b][1][j], v, 1e-6, 0, 'dx slice 1') end
    for j = 1, 3 do T.near(g[b][2][j], 1, 0, 0, 'dx slice 2 (the identity)') end
  end
  for r = 1, 2 do for j, v in ipairs({8, 10, 12}) do T.near(p['0'].grad_weight:totable()[r][j], v, 1e-6, 0, 'dW') end end
  for j = 1, 2 do T.near(p['0'].grad_bias:totable()[j], 2, 0, 0, 'db') end
  T.eq(names(p), '0.weight 0.bias')
  check(nn.Parallel(2, 2, {nn.Linear(3, 2), nn.Sequential{nn.Linear(3, 4), nn.GELU()}, nn.Identity()}),
    randn({2, 3, 3}, 'par.x'))
  check(nn.Parallel(1, 1, {{'norm', nn.LayerNorm(4)}, {'fc', nn.Linear(4, 4)}}), randn({2, 3, 4}, 'par1.x'))
  -- a wrong number of slices names the container and both shapes
  local bad = nn.materialize(nn.Sequential{{'split', nn.Parallel(2, 2, {nn.Identity(), nn.Identity()})}}, 1)
  T.raises(function() bad:forward(lunar.zeros({2, 3, 4})) end,
    '^split %(Parallel%): input %(dim 2: one slice per child%): expected %[%*, 2, %*%], got %[2, 3, 4%]$')
  T.raises(function() nn.Parallel(0, 1, {nn.Identity()}) end, 'in_dim must be a positive integer')
end)

T.test('leaves: nn.MultiheadAttention: PyTorch names and init, gradcheck, equal to Attention with the same weights', function()
  local m = nn.MultiheadAttention(8, 2)
  T.eq(names(m), 'in_proj_weight in_proj_bias out_proj.weight out_proj.bias')
  check(m, randn({2, 4, 8}, 'mha.x'))
  check(nn.MultiheadAttention(6, 3, {bias = false}), randn({1, 3, 6}, 'mha3.x'))
  -- PyTorch's init: in_proj_weight xavier_uniform on [24, 8] (bound sqrt(6 / 32) = 0.4330), out_proj.weight
  -- U(-1/sqrt(8), 1/sqrt(8)) (0.3536), zero biases
  nn.materialize(m, 5)
  local wmax = math.max(m.in_proj_weight:max(), -m.in_proj_weight:min())
  T.truthy(wmax <= math.sqrt(6 / 32) and wmax > 0.8 * math.sqrt(6 / 32), 'in_proj_weight bound: ' .. wmax)
  local omax = math.max(m.out_proj.weight:max(), -m.out_proj.weight:min())
  T.truthy(omax <= 1 / math.sqrt(8) and omax > 0.8 / math.sqrt(8), 'out_proj.weight bound: ' .. omax)
  T.eq(m.in_proj_bias:norm(), 0)
  -- timm's fused Attention with qkv.weight = in_proj_weight and proj = out_proj is the same function
  local a = nn.materialize(nn.Attention(8, 2), 9)
  a.qkv.weight:copy_(m.in_proj_weight); a.qkv.bias:copy_(randn({24}, 'mha.b'))
  m.in_proj_bias:copy_(a.qkv.bias)
  a.proj.weight:copy_(m.out_proj.weight); a.proj.bias:copy_(m.out_proj.bias)
  local x = randn({2, 4, 8}, 'mha.x2')
  local ya, ca = a:forward(x)
  local ym, cm = m:forward(x)
  T.check_close('MultiheadAttention vs Attention', ym, ya, {rtol = 0, atol = 0})
  ca:free(); cm:free()
  local bad = nn.materialize(nn.Sequential{{'attn', nn.MultiheadAttention(8, 2)}}, 1)
  T.raises(function() bad:forward(lunar.zeros({2, 4, 6})) end,
    '^attn %(MultiheadAttention%): tokens %(batch_first%): expected %[B, N, 8%], got %[2, 4, 6%]$')
  T.raises(function() nn.MultiheadAttention(8, 3) end, 'embed_dim %(8%) must be an integer multiple of num_heads %(3%)')
end)

T.test('nn.flops: training FLOPs of one image of a composed model, by hand; setup logs them for MODEL', function()
  -- Conv2d(1, 4, 2) on 4x4 -> 4 patches, tokens 5 with the class token, one block of width 4 (MHA, 2 heads;
  -- MLP 4 -> 8 -> 4), head 4 -> 3 on the class token. Forward FLOPs by hand (multiply-add = 2):
  --   conv 2 * fan_in 4 * numel(y) 16 = 128; in_proj 2*5*4*12 = 480, attention 4*5*5*4 = 400, out_proj 2*5*4*4 = 160;
  --   fc1 2*5*4*8 = 320, fc2 320; head 2*1*4*3 = 24; sum 1832; training = 3 x 1832 = 5496
  local m = nn.materialize(nn.Sequential{{'stem', nn.Conv2d(1, 4, 2)}, nn.Reshape({4, -1}), nn.Transpose(2, 3),
    nn.ClassToken(4), nn.PositionEmbedding(5, 4),
    nn.Residual{nn.LayerNorm(4), nn.MultiheadAttention(4, 2)},
    nn.Residual{nn.LayerNorm(4), nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4)},
    nn.SelectToken(1), {'head', nn.Linear(4, 3)}}, 1)
  T.eq(nn.flops.train_flops_per_image(m, {1, 4, 4}), 5496)
  T.truthy(m.training and m.head.training, 'the training flags restored')
  T.eq(rawget(m.head, 'forward'), nil, 'the counting wrappers removed')
  -- a batch of 3: 3 x the forward FLOPs of one image
  T.eq(nn.flops.forward_flops(m, lunar.zeros({3, 1, 4, 4})), 3 * 1832)
  -- timm's Attention: qkv 2*5*4*12 + attention 4*5*5*4 + proj 2*5*4*4, the same as the MHA
  local a = nn.materialize(nn.Attention(4, 2), 1)
  T.eq(nn.flops.forward_flops(a, lunar.zeros({1, 5, 4})), 480 + 400 + 160)
  -- setup: a MODEL's run logs FLOP/s; vit_composed (width 192, 6 blocks, 49 patches + class token): per block
  -- 2*50*192*(576 + 192 + 768 + 768) + 4*50*50*192 = 46,156,800, x 6, + patch_embed 2*16*192*49 + head 2*192*10,
  -- x 3 = 831,737,088 (models.vit_train_flops_per_image's 6 * params * tokens + 12 * depth * N^2 * C: 839,926,200)
  local cfg = require('lunar.config').load(lunar.home .. '/configs/examples/vit_composed.lua', {'NUM_THREADS=1'})
  local run = require('lunar.setup').from_config(cfg, nil, {grid = false, quiet = true, loaders = false})
  T.eq(run.flops_per_image, 831737088)
end)

T.test('containers: the contract (contexts released, need_dx, evaluation, dx may be dy)', function()
  local m = nn.materialize(nn.Sequential{nn.Linear(3, 4), nn.GELU(), nn.Identity(), nn.Linear(4, 2), nn.Identity()}, 1)
  local x = randn({2, 3}, 'contract.x')
  local y, ctx = m:forward(x)
  T.truthy(#ctx:tensors() > 0, 'the context owns the intermediate activations')
  local dx = m:backward(ctx, lunar.ones({2, 2}))
  T.truthy(ctx.freed, 'backward releases the context')
  T.eq(table.concat(dx:shape(), ','), '2,3')
  T.truthy(not y:is_released(), 'the output (the last Identity returned it) stays the caller\'s')
  local y2, c2 = m:forward(x)
  T.eq(m:backward(c2, lunar.ones({2, 2}), false), nil, 'need_dx = false gives nil')
  -- evaluation keeps nothing
  m:evaluate()
  local y3, c3 = m:forward(x)
  T.eq(#c3:tensors(), 0, 'evaluation keeps no activations')
  T.near(y3:sum(), y2:sum(), 1e-6, 0, 'evaluation computes the same output')
  T.raises(function() m:backward(c3, lunar.ones({2, 2})) end, 'evaluation mode')
  c3:free()
  m:train()
  -- an all-identity Sequential: dx is dy itself
  local idm = nn.Sequential{nn.Identity(), nn.Identity()}
  local yi, ci = idm:forward(x)
  T.truthy(rawequal(yi, x), 'y is x')
  local dy = lunar.ones({2, 3})
  T.truthy(rawequal(idm:backward(ci, dy), dy), 'dx is dy')
end)

-- a config's MODEL ----------------------------------------------------------------------

local config = require('lunar.config')
local setup = require('lunar.setup')

-- small and fast: synthetic data, width 16, 2 blocks, batches of 8
local SMALL = {'DATASET=synthetic', 'NUM_SAMPLES=48', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=2', 'BATCH_SIZE=8',
  'EVAL_EVERY_EPOCH=false', 'NUM_THREADS=1'}

local function run_of(cfg)
  return setup.from_config(cfg, nil, {grid = false, quiet = true})
end

T.test('configs/examples: each defines MODEL and trains 3 steps through setup and engine:train_step', function()
  local expect = {
    meanpool_head = {'patch_embed.proj.weight', 'pos_embed', 'blocks.1.mlp.fc1.weight', 'blocks.0.attn.qkv.weight',
      'head.0.weight', 'head.2.bias'},
    postnorm = {'cls_token', 'pos_embed', 'blocks.0.attn.proj.weight', 'blocks.1.norm2.bias', 'blocks.1.mlp.fc2.weight'},
    conv_stem = {'stem.0.weight', 'stem.2.bias', 'pos_embed', 'blocks.1.norm1.weight', 'norm.bias', 'head.weight'},
  }
  for _, name in ipairs({'meanpool_head', 'postnorm', 'conv_stem'}) do
    local cfg = config.load(lunar.home .. '/configs/examples/' .. name .. '.lua', SMALL)
    T.eq(type(cfg.MODEL), 'function', name)
    local run = run_of(cfg)
    local have = {}
    for _, p in ipairs(run.model:parameters()) do have[p.name] = p end
    for _, n in ipairs(expect[name]) do T.truthy(have[n], name .. ': parameter ' .. n) end
    local before = run.model._flat:clone()
    local losses = T.train_steps(run.engine, run.train_loader, 3)
    T.eq(#losses, 3, name)
    for i, l in ipairs(losses) do
      -- 10 classes: the first loss of a fresh model is near ln(10) = 2.30
      T.truthy(l == l and l > 0.5 and l < 5, string.format('%s: loss %d = %s', name, i, tostring(l)))
    end
    T.eq(run.engine.optimizer_steps, 3, name)
    local moved = (run.model._flat - before):norm()
    T.truthy(moved > 0, name .. ': the optimizer moved the weights')
    before:free()
  end
end)

-- The built-in ViT composed from the blocks (configs/examples/vit_composed.lua): the same
-- names, hence the same init, and the same loss and gradients (the fused modules compute
-- the same sums; the parameter order in the flat buffers differs, so the gradient norm's
-- sum order differs: float tolerance, not bits).
T.test('a ViT composed from Sequential/Residual equals the built-in ViT step for step', function()
  local base = config.load(lunar.home .. '/configs/vit_fmnist.lua', SMALL)
  local fused = run_of(base)
  local cfg2 = config.load(lunar.home .. '/configs/examples/vit_composed.lua', SMALL)
  local comp = run_of(cfg2)
  local F, Cp = {}, {}
  for _, p in ipairs(fused.model:parameters()) do F[p.name] = p end
  for _, p in ipairs(comp.model:parameters()) do Cp[p.name] = p end
  local n = 0
  for name, p in pairs(F) do
    T.truthy(Cp[name], 'the composed model has ' .. name)
    T.eq((p.param - Cp[name].param):norm(), 0.0, name .. ': the same init (drawn from seed and name)')
    n = n + 1
  end
  T.eq(#comp.model:parameters(), n, 'the same parameter count')
  -- step 1: the same loss and the same gradients by name (the engine leaves them in the grad views)
  local lf = T.train_steps(fused.engine, fused.train_loader, 1)
  local lc = T.train_steps(comp.engine, comp.train_loader, 1)
  T.near(lc[1], lf[1], 1e-6, 0, 'loss of step 1')
  for name, p in pairs(F) do
    T.check_close(name .. ' (gradient of step 1)', Cp[name].grad, p.grad, {rtol = 1e-4, atol = 1e-7})
  end
  -- two more steps: the losses stay together (AdamW turns the round-off in the zero
  -- gradient of the key bias into lr-sized steps, so weights are not compared after it)
  local lf2, lc2 = T.train_steps(fused.engine, fused.train_loader, 2), T.train_steps(comp.engine, comp.train_loader, 2)
  for i = 1, 2 do T.near(lc2[i], lf2[i], 1e-4, 0, 'loss of step ' .. (i + 1)) end
end)

T.test('MODEL errors: not a function, not a module, duplicate names, sequence parallel, a pipeline without blocks', function()
  local path = os.tmpname()
  local function write(text) local f = assert(io.open(path, 'w')); f:write(text); f:close() end
  write('MODEL = 3\n')
  T.raises(function() config.load(path) end, "config key 'MODEL' must be a string or a function, got number 3")
  write('DATASET = "synthetic"\n\nMODEL = function(cfg, nn)\n  return 42\nend\n')
  local cfg = config.load(path)
  T.raises(function() setup.config_model(cfg) end,
    path:gsub('%p', '%%%0') .. ":3: config key 'MODEL' must return a lunar.nn module %(e.g. nn.Sequential{...}%), got number")
  write('MODEL = function(cfg, nn) return nn.Linear end\n')
  T.raises(function() setup.config_model(config.load(path)) end, "got a Linear class, not an instance")
  write('MODEL = function(cfg, nn) return nn.Sequential{{"", nn.Linear(2, 2)}, {"", nn.Linear(2, 2)}} end\n')
  T.raises(function() setup.config_model(config.load(path)) end, "two parameters named 'weight'")
  write('MODEL = function(cfg, nn) return nn.Linear(2, 2) end\n')
  T.raises(function() setup.config_model(config.load(path), {tp_size = 2, tp_rank = 0, pp_size = 1,
    sequence_parallel = true}) end, ":1: config key 'MODEL' .*with parallel.sequence_parallel: its containers")
  T.raises(function() setup.config_model(config.load(path), {tp_size = 1, pp_size = 2}) end,
    ":1: config key 'MODEL': pipeline parallelism %(parallel.pipeline = 2%) needs a nn.Sequential with a child 'blocks', got a Linear")
  write('MODEL = function(cfg, nn) return nn.Sequential{{"head", nn.Linear(2, 2)}} end\n')
  T.raises(function() setup.config_model(config.load(path), {tp_size = 1, pp_size = 2,
    stage = {first_block = 0, last_block = 2, is_first = true, is_last = false}}) end,
    ":1: config key 'MODEL': pipeline parallelism splits the model's child 'blocks', a nn.Sequential of DEPTH = 6 " ..
    "blocks; this model has no child named 'blocks'")
  os.remove(path)
end)

T.test('MODEL in config.dump and a checkpoint: written as its source, read back, resumed into', function()
  local checkpoint = require('lunar.checkpoint')
  local cfg = config.load(lunar.home .. '/configs/examples/postnorm.lua', SMALL)
  local text = config.dump(cfg, {comments = true})
  T.truthy(text:find('MODEL = function%(cfg, nn%)'), 'the dump writes the function\'s source')
  local dir = os.tmpname()
  os.remove(dir)
  local run = run_of(cfg)
  T.train_steps(run.engine, run.train_loader, 2)
  local path = checkpoint.save(dir, {model = run.model, optimizer = run.optimizer, engine = run.engine, config = cfg,
    step = 2, epoch = 0})
  -- the checkpoint's config.lua loads, and its MODEL builds the same parameters
  local back = config.load(path .. '/config.lua')
  T.eq(type(back.MODEL), 'function', 'MODEL read back from config.lua')
  local run2 = run_of(back)
  T.eq(names(run2.model), names(run.model), 'the same parameter names')
  checkpoint.load(path, {model = run2.model, optimizer = run2.optimizer, engine = run2.engine, config = back})
  T.eq((run2.model._flat - run.model._flat):norm(), 0.0, 'the weights resumed bit for bit')
  lunar.io.remove_tree(dir)
  -- a function that uses a local of its file cannot be written as its source
  local f = os.tmpname()
  local h = assert(io.open(f, 'w'))
  h:write('local W = 8\nMODEL = function(cfg, nn) return nn.Linear(W, 2) end\n')
  h:close()
  T.raises(function() config.dump(config.load(f)) end,
    "cannot write the function at 'MODEL' %(.*:2%): it uses 'W', a local of its file")
  os.remove(f)
end)

T.test('activation and RMSNorm kernels on a CUDA device equal the CPU kernels', function()
  local available, reason = lunar.cuda.is_available()
  if not available then T.skip('no CUDA device (' .. reason .. ')') end
  local x = randn({3, 7, 33}, 'act.cuda.x', 4)
  local dy = randn({3, 7, 33}, 'act.cuda.dy')
  local xd, dyd = x:to('cuda'), dy:to('cuda')
  for _, kind in ipairs({'relu', 'silu', 'gelu_tanh'}) do
    -- the same f32 formulas: within a few ulps (expf may differ by an ulp on the device)
    T.check_close(kind, ops.activation(xd, kind):to('cpu'), ops.activation(x, kind), {rtol = 1e-6, atol = 1e-7})
    T.check_close(kind .. ' backward', ops.activation_backward(dyd, xd, kind):to('cpu'),
      ops.activation_backward(dy, x, kind), {rtol = 1e-6, atol = 1e-7})
  end
  -- RMSNorm: the CPU kernel's arithmetic (double row sums)
  local w = randn({33}, 'rms.cuda.w')
  local y, r = ops.rmsnorm(x, w, 1e-6)
  local yd, rd = ops.rmsnorm(xd, w:to('cuda'), 1e-6)
  T.check_close('rmsnorm', yd:to('cpu'), y, {rtol = 1e-6, atol = 1e-7})
  local gw, gwd = lunar.zeros({33}), lunar.zeros({33}, 'f32', 'cuda')
  T.check_close('rmsnorm backward', ops.rmsnorm_backward(dyd, xd, w:to('cuda'), rd, gwd):to('cpu'),
    ops.rmsnorm_backward(dy, x, w, r, gw), {rtol = 1e-5, atol = 1e-6})
  T.check_close('rmsnorm dweight', gwd:to('cpu'), gw, {rtol = 1e-5, atol = 1e-6})
end)

-- PyTorch goldens, generated here by tests/golden/gen_leaves.py (each module in float64
-- PyTorch; nothing committed): outputs, input gradients and parameter gradients by name.
-- Skipped, and counted, where Debian's PyTorch is missing (PYTHON, default /usr/bin/python3).
local function leaves_golden()
  local python = os.getenv('PYTHON') or '/usr/bin/python3'
  if not os.execute(python .. " -c 'import torch' >/dev/null 2>&1") then
    return nil, python .. ' has no torch (apt-get install python3-torch)'
  end
  local path = os.tmpname()
  local cmd = string.format("cd '%s' && %s tests/golden/gen_leaves.py '%s' >/dev/null", lunar.home, python, path)
  if not os.execute(cmd) then
    os.remove(path)
    error('tests/golden/gen_leaves.py failed (' .. cmd .. ')')
  end
  return path
end

T.test('leaves and containers against PyTorch (outputs and gradients by parameter name, 1e-5)', function()
  local path, why = leaves_golden()
  if not path then T.skip(why) end
  local st, meta = lunar.io.load_safetensors(path)
  os.remove(path)
  local build = {
    relu = function() return nn.ReLU() end,
    silu = function() return nn.SiLU() end,
    gelu = function() return nn.GELU() end,
    gelu_tanh = function() return nn.GELU{approximate = 'tanh'} end,
    layernorm = function() return nn.LayerNorm(5, 1e-6) end,
    rmsnorm = function() return nn.RMSNorm(5, 1e-6) end,
    linear = function() return nn.Linear(5, 4) end,
    conv2d = function() return nn.Conv2d(2, 3, 2) end,
    -- torch.nn.Conv2d(2, 3, 3, stride=1, padding=1), (3, 2, 3, stride=1), (1, 2, 4, stride=1, padding=2)
    conv2d_same = function() return nn.Conv2d(2, 3, 3, {stride = 1, padding = 1}) end,
    conv2d_valid = function() return nn.Conv2d(3, 2, 3, {stride = 1}) end,
    conv2d_pad2 = function() return nn.Conv2d(1, 2, 4, {stride = 1, padding = 2}) end,
    conv3d = function() return nn.Conv3d(2, 3, 2) end,
    meanpool = function() return nn.MeanPool() end,
    sequential = function() return nn.Sequential{nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 5)} end,
    residual = function() return nn.Residual{nn.LayerNorm(5, 1e-6), nn.Linear(5, 5)} end,
    concat = function() return nn.Concat(3, {nn.Linear(5, 2), nn.Identity(), nn.Linear(5, 3)}) end,
    tokens = function() return nn.Sequential{{'', nn.ClassToken(5)}, {'', nn.PositionEmbedding(5, 5)}} end,
    parallel = function() return nn.Parallel(2, 2, {nn.Linear(5, 2), nn.Identity(), nn.Linear(5, 3)}) end,
    -- torch.nn.MultiheadAttention(8, 2, batch_first=True)(x, x, x, need_weights=False)
    mha = function() return nn.MultiheadAttention(8, 2) end,
  }
  local tol = {rtol = 1e-5, atol = 1e-5}
  local n = 0
  for case in meta.cases:gmatch('[^,]+') do
    local m = nn.materialize(T.truthy(build[case], 'a Lunar module for case ' .. case)(), 1)
    local params = m:parameters()
    for _, p in ipairs(params) do
      p.param:copy_(T.truthy(st[case .. '.param.' .. p.name], case .. ': PyTorch has parameter ' .. p.name))
    end
    local y, ctx = m:forward(st[case .. '.x'])
    T.check_close(case .. ' output', y, st[case .. '.y'], tol)
    local dx = m:backward(ctx, st[case .. '.dy'])
    T.check_close(case .. ' input gradient', dx, st[case .. '.dx'], tol)
    local k = 0
    for name in pairs(st) do if name:find('^' .. case .. '%.grad%.') then k = k + 1 end end
    T.eq(#params, k, case .. ': as many parameters as PyTorch\'s')
    for _, p in ipairs(params) do T.check_close(case .. ' grad ' .. p.name, p.grad, st[case .. '.grad.' .. p.name], tol) end
    n = n + 1
  end
  T.eq(n, 19, 'every case of the golden file')
  -- nn.MultiheadAttention with separate query, key, value and PyTorch's masks (gen_leaves.py
  -- mha_tensors): key_padding_mask, a causal bool attn_mask, cross-attention (L 3, S 6) with a
  -- float [B*H, L, S] attn_mask and key_padding_mask, kdim 6 / vdim 4
  local dims = {mha_kvdim = {kdim = 6, vdim = 4}}
  local m_n = 0
  for case in meta.mha_cases:gmatch('[^,]+') do
    local m = nn.materialize(nn.MultiheadAttention(8, 2, dims[case]), 1)
    local params = m:parameters()
    for _, p in ipairs(params) do
      p.param:copy_(T.truthy(st[case .. '.param.' .. p.name], case .. ': PyTorch has parameter ' .. p.name))
    end
    local kpm, am = st[case .. '.key_padding_mask'], st[case .. '.attn_mask']
    local input = {st[case .. '.query'], st[case .. '.key'], st[case .. '.value'],
      key_padding_mask = kpm and kpm:to('u8'),                             -- PyTorch's bool
      attn_mask = am and (am:dim() == 2 and am:to('u8') or am)}             -- [L, S] bool, or [B*H, L, S] float
    local y, ctx = m:forward(input)
    T.check_close(case .. ' output', y, st[case .. '.y'], tol)
    local g = m:backward(ctx, st[case .. '.dy'])
    for _, role in ipairs({'query', 'key', 'value'}) do
      T.check_close(case .. ' d' .. role, g[role], st[case .. '.d' .. role], tol)
    end
    local k = 0
    for name in pairs(st) do if name:find('^' .. case .. '%.grad%.') then k = k + 1 end end
    T.eq(#params, k, case .. ': as many parameters as PyTorch\'s')
    for _, p in ipairs(params) do T.check_close(case .. ' grad ' .. p.name, p.grad, st[case .. '.grad.' .. p.name], tol) end
    m_n = m_n + 1
  end
  T.eq(m_n, 4, 'every MultiheadAttention case of the golden file')
end)

T.test('Sequential: data-parallel gradient groups (contiguous, in backward order, reported as completed)', function()
  local cfg = config.load(lunar.home .. '/configs/examples/vit_composed.lua', SMALL)
  local m = nn.materialize(cfg.MODEL(cfg, nn), 1)
  local order = m:grad_group_order()
  -- head, pool, norm, blocks 1 and 0, the position table, the class token, patch_embed (hand-listed)
  T.eq(table.concat(order, ' '), 'head pool norm blocks.1 blocks.0 #3 #2 patch_embed')
  -- every parameter is in a listed group, and each group is one contiguous range of the flat buffer
  local range = {}
  for _, p in ipairs(m:parameters()) do
    local k = T.truthy(m:grad_group_of(p.name), 'a group for ' .. p.name)
    local n = 1
    for _, d in ipairs(p.shape) do n = n * d end
    local r = range[k] or {lo = math.huge, hi = -1, count = 0}
    r.lo, r.hi, r.count = math.min(r.lo, m._offsets[p.name]), math.max(r.hi, m._offsets[p.name] + n - 1), r.count + n
    range[k] = r
  end
  for k, r in pairs(range) do T.eq(r.hi - r.lo + 1, r.count, 'group ' .. k .. ' is contiguous') end
  T.eq(m:grad_group_of('blocks.1.mlp.fc2.weight'), 'blocks.1')
  T.eq(m:grad_group_of('cls_token'), '#2')
  -- backward reports each group once, in that order, each when its gradients are complete
  local seen, fc1, fc1_0 = {}, nil, nil
  for _, p in ipairs(m:parameters()) do
    if p.name == 'blocks.1.mlp.fc1.weight' then fc1 = p.grad elseif p.name == 'blocks.0.mlp.fc1.weight' then fc1_0 = p.grad end
  end
  m.grad_ready_hook = function(k)
    seen[#seen + 1] = k
    if k == 'blocks.1' then
      T.truthy(fc1:norm() > 0, 'blocks.1 complete when reported')
      T.eq(fc1_0:norm(), 0.0, 'blocks.0 not yet')
    end
  end
  local x = randn({2, cfg.IN_CHANS, cfg.IMG_SIZE, cfg.IMG_SIZE}, 'groups.x')
  local y, ctx = m:forward(x)
  m:backward(ctx, lunar.ones(y:shape()))
  T.eq(table.concat(seen, ' '), table.concat(order, ' '))
end)

T.test('pipeline stages of a composed model: the blocks split, names kept, hidden shape measured', function()
  local cfg = config.load(lunar.home .. '/configs/examples/vit_composed.lua', SMALL)   -- DEPTH 2
  local function names_of(stage)
    local g = {tp_size = 1, pp_size = 2, stage = stage}
    local m, full = setup.config_model(cfg, g)
    nn.materialize(m, 1)
    return names(m), m, full
  end
  local n0, m0, full = names_of({first_block = 0, last_block = 0, is_first = true, is_last = false})
  local n1, m1 = names_of({first_block = 1, last_block = 1, is_first = false, is_last = true})
  T.truthy(n0:find('^patch_embed%.proj%.weight patch_embed%.proj%.bias cls_token pos_embed blocks%.0%.norm1%.weight'), n0)
  T.falsy(n0:find('blocks%.1') or n0:find('head'), 'stage 0 holds neither block 1 nor the head: ' .. n0)
  T.truthy(n1:find('^blocks%.1%.norm1%.weight') and n1:find('norm%.weight norm%.bias head%.weight head%.bias$'), n1)
  T.eq(m0:num_parameters() + m1:num_parameters(), full, 'the stages hold the whole model')
  -- hidden_shape: 49 patches + the class token, width 16, for any batch
  T.eq(table.concat(m0:hidden_shape(3), ','), '3,50,16')
  T.eq(table.concat(m1:hidden_shape(5), ','), '5,50,16')
  -- stage 0 then stage 1 is the whole model: the same logits as the unsplit one (same init by name)
  local whole = nn.materialize(cfg.MODEL(cfg, nn), 1)
  local x = randn({2, 1, 28, 28}, 'stages.x')
  local h, c0 = m0:forward(x)
  local y, c1 = m1:forward(h)
  local yw, cw = whole:forward(x)
  T.check_close('logits of stage 1 after stage 0', y, yw, {rtol = 1e-6, atol = 1e-7})
  c0:free(); c1:free(); cw:free()
end)

T.test('tensor parallelism of a composed model: Attention, MLP and Block split, the rest replicated', function()
  local cfg = config.load(lunar.home .. '/configs/examples/meanpool_head.lua', SMALL)
  -- rank 1 of a tensor group of 2 (no collective runs while building and naming)
  local m = setup.config_model(cfg, {tp_size = 2, tp_rank = 1, pp_size = 1, sequence_parallel = false})
  nn.materialize(m, 1)
  local P = {}
  for _, p in ipairs(m:parameters()) do P[p.name] = p end
  -- qkv [3C, C] split by heads: 3 * 16 / 2 rows here; the composed MLP (plain Linears) and the head replicated
  T.eq(table.concat(P['blocks.0.attn.qkv.weight'].shape, ','), '24,16')
  T.truthy(P['blocks.0.attn.qkv.weight'].shard, 'qkv is a shard')
  T.eq(table.concat(P['blocks.0.mlp.fc1.weight'].shape, ','), '64,16')
  T.falsy(P['blocks.0.mlp.fc1.weight'].shard, 'the Sequential MLP of plain Linears is replicated')
  T.falsy(P['head.0.weight'].shard, 'the head is replicated')
end)

T.test("configs/examples under precision = 'bf16': each trains 2 steps, losses near fp32's", function()
  local ok, why = ops.bf16_supported('cpu')
  if not ok then T.skip(why) end
  for _, name in ipairs({'meanpool_head', 'postnorm', 'conv_stem', 'vit_composed'}) do
    local path = lunar.home .. '/configs/examples/' .. name .. '.lua'
    local r32 = run_of(config.load(path, SMALL))
    local l32 = T.train_steps(r32.engine, r32.train_loader, 1)
    local over = {'precision=bf16'}
    for _, o in ipairs(SMALL) do over[#over + 1] = o end
    local r16 = run_of(config.load(path, over))
    local l16 = T.train_steps(r16.engine, r16.train_loader, 2)
    -- bf16 GEMM operands and activations (2^-9 relative each): the first loss within 2% of fp32's
    T.near(l16[1], l32[1], 2e-2, 0, name .. ': first loss, bf16 vs fp32')
    T.truthy(l16[2] == l16[2] and l16[2] < 5, name .. ': second loss finite')
  end
end)

T.test('timm export of a composed ViT loads into the built-in ViT: the same logits', function()
  local timm = require('lunar.timm')
  local models = require('lunar.models')
  local cfg = config.load(lunar.home .. '/configs/examples/vit_composed.lua', SMALL)
  local comp = nn.materialize(cfg.MODEL(cfg, nn), 5)
  local path = os.tmpname()
  timm.export(comp, path)
  local fused = nn.materialize(models.vit(cfg), 6)          -- another seed: every weight must come from the file
  timm.load_pretrained(fused, path)
  os.remove(path)
  comp:evaluate(); fused:evaluate()
  local x = randn({2, 1, 28, 28}, 'timm.x')
  local a, ca = comp:forward(x)
  local b, cb = fused:forward(x)
  T.check_close('logits, composed vs built-in after timm export/load', a, b, {rtol = 1e-5, atol = 1e-6})
  ca:free(); cb:free()
end)

T.run()
