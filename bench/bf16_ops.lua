-- bench/bf16_ops.lua: the ops of one ViT block in fp32 and in bf16
-- (precision = 'bf16': bf16 operands and outputs, fp32 sums) side by side, at
-- the main job's shapes (configs/vit_fmnist.lua: batch 128, 50 tokens, width
-- 192, 3 heads, MLP 768), through lunar.ops on the CPU. Each line: the median
-- of ROUNDS timings of the fp32 op and of its bf16 form, interleaved, and
-- their ratio. Not a test (bf16 needs avx512_bf16 here).
--   OMP_NUM_THREADS=2 build/lunar bench/bf16_ops.lua [ROUNDS=15]
local ops = lunar.ops
local ok, why = ops.bf16_supported('cpu')
if not ok then error('bench/bf16_ops: ' .. why, 0) end
local ROUNDS = tonumber((lunar.args.rest or {})[1] or (arg and arg[1])) or 15
local B, N, C, H, HID = 128, 50, 192, 3, 768

local function rand(shape, name, lo, hi) return lunar.empty(shape):uniform_(1, name, lo or -1, hi or 1) end
local x = rand({B, N, C}, 'x')
local x16 = ops.cast_bf16(x)
local w1 = rand({HID, C}, 'w1', -0.1, 0.1)
local w1_16 = ops.cast_bf16(w1)
local b1 = lunar.zeros({HID})
local qkv = rand({B, N, 3 * C}, 'qkv', -2, 2)
local qkv16 = ops.cast_bf16(qkv)
local o, lse = ops.attention(qkv, H)
local o16, lse16 = ops.attention(qkv16, H)
local dout = rand({B, N, C}, 'dout')
local dout16 = ops.cast_bf16(dout)
local h = rand({B, N, HID}, 'h', -3, 3)
local h16 = ops.cast_bf16(h)
local dy = rand({B, N, HID}, 'dy')
local dy16 = ops.cast_bf16(dy)
local dw, db = lunar.zeros({HID, C}), lunar.zeros({HID})

-- {name, fp32 op, bf16 op}; each returns what it allocated, freed after timing
local cases = {
  {'linear fc1 (C -> 4C)', function() return ops.linear(x, w1, b1) end,
    function() return ops.linear(x16, w1_16, b1, 'bf16') end},
  {'linear fc1 backward', function() return ops.linear_backward(dy, x, w1, dw, db) end,
    function() return ops.linear_backward(dy16, x16, w1_16, dw, db) end},
  {'attention forward', function() local a, l = ops.attention(qkv, H); l:free(); return a end,
    function() local a, l = ops.attention(qkv16, H); l:free(); return a end},
  {'attention backward', function() return ops.attention_backward(dout, qkv, o, lse, H) end,
    function() return ops.attention_backward(dout16, qkv16, o16, lse16, H) end},
  {'gelu forward', function() return ops.gelu(h) end, function() return ops.gelu(h16, 'bf16') end},
  {'gelu backward', function() return ops.gelu_backward(dy, h) end, function() return ops.gelu_backward(dy, h16) end},
}

local function median(t) table.sort(t); return t[(#t + 1) // 2] end
print(string.format('%d threads, %d rounds; medians in ms', lunar.num_threads(), ROUNDS))
print(string.format('%-24s %9s %9s %7s', 'op', 'fp32', 'bf16', 'ratio'))
for _, c in ipairs(cases) do
  local t = {{}, {}}
  for r = 0, ROUNDS do
    for k = 1, 2 do
      local t0 = lunar.clock()
      local out = c[k + 1]()
      local dt = lunar.clock() - t0
      out:free()
      if r > 0 then table.insert(t[k], dt * 1e3) end   -- round 0 warms up
    end
  end
  local a, b = median(t[1]), median(t[2])
  print(string.format('%-24s %9.2f %9.2f %6.2fx', c[1], a, b, a / b))
end
