--- lunar.nn.ShiftedPatches: the input side of Shifted Patch Tokenization
-- (SPT; Lee, Lee and Song, "Vision Transformer for Small-Size Datasets",
-- 2021, arXiv:2112.13492): the image and four copies of it shifted
-- diagonally by `shift` pixels (left-up, right-up, left-down, right-down;
-- the uncovered border zero), stacked on the channels, so that the patch
-- embedding that follows sees each patch together with the edges of its
-- neighbours at no cost in tokens: x [B, C, H, W] -> y [B, 5C, H, W], in
-- the order (x, left-up, right-up, left-down, right-down), channel blocks of
-- C. The paper shifts by half a patch. Copy c of the output at pixel (i, j)
-- is x at (i + dy, j + dx) (0 outside), with (dy, dx) = (-s, -s), (-s, s),
-- (s, -s), (s, s) for copies 1..4: in PyTorch, p = F.pad(x, (s, s, s, s))
-- and copy k = p[:, :, s+dy : s+dy+H, s+dx : s+dx+W].
-- No parameters; 2D only; f32 or bf16 in, the input's dtype out. Backward
-- (when a gradient to the image is asked for) sums the shifted-back copies.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local shifted_views = require('lunar.nn.shifted_views')

local ShiftedPatches = class('ShiftedPatches', Module)

ShiftedPatches.SHIFTS = {{0, 0}, {-1, -1}, {-1, 1}, {1, -1}, {1, 1}}   -- (dy, dx) in units of shift

--- @param shift integer the shift in pixels (> 0; the paper: patch size // 2)
function ShiftedPatches:__init(shift)
  Module.__init(self)
  if math.type(shift) ~= 'integer' or shift < 1 then
    error('nn.ShiftedPatches: shift must be a positive integer (pixels), got ' .. tostring(shift), 3)
  end
  self.shift = shift
end

function ShiftedPatches:extra_repr() return string.format('shift=%d', self.shift) end

-- Calls fn(out, inp) for each copy k: out the view of channel block k of the
-- [B, 5C, H, W] tensor `wide` that copy k fills, inp the view of the [B, C,
-- H, W] tensor `img` it reads (the views freed after fn).
local function each_copy(wide, img, sh, fn)
  local shifts = {}
  for k, d in ipairs(ShiftedPatches.SHIFTS) do shifts[k] = {d[1] * sh, d[2] * sh} end
  shifted_views(wide, img, shifts, fn)
end

--- x [B, C, H, W] -> y [B, 5C, H, W]; ctx keeps only the shape.
function ShiftedPatches:forward(x)
  local s = x:shape()
  if #s ~= 4 then self:shape_error('image', s, {'B', 'C', 'H', 'W'}) end
  local B, C, H, W = s[1], s[2], s[3], s[4]
  local sh = self.shift
  if sh >= H or sh >= W then
    error(string.format('nn.ShiftedPatches: shift %d must be smaller than the image (%d x %d)', sh, H, W), 2)
  end
  local y = lunar.zeros({B, 5 * C, H, W}, x:dtype(), x:device())
  each_copy(y, x, sh, function(out, inp) out:copy_(inp) end)
  return y, Context(nil, {shape = s})
end

--- dy [B, 5C, H, W] -> dx [B, C, H, W] (nil when need_dx is false): the sum
-- of the five copies' gradients, each shifted back.
function ShiftedPatches:backward(ctx, dy, need_dx)
  local s = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local dx = lunar.zeros(s, 'f32', dy:device())
  each_copy(dy, dx, self.shift, function(g, acc)
    local sum = acc + g
    acc:copy_(sum)
    sum:free()
  end)
  return dx
end

return ShiftedPatches
