--- lunar.nn.shifted_views: the shifted-copy pattern behind im2col
-- (nn.Conv2d with stride 1) and Shifted Patch Tokenization
-- (nn.ShiftedPatches): channel blocks of a wide [B, n*C, Ho, Wo] tensor,
-- each a copy of a [B, C, H, W] image shifted by (dy, dx) pixels, zero where
-- the shift reads outside the image.
--
--   local each = require('lunar.nn.shifted_views')
--   each(wide, img, shifts, fn)
--     shifts: a list of {dy, dx}; block k (channels (k-1)*C+1 .. k*C of wide)
--     at output pixel (i, j) reads img at (i + dy, j + dx) (0-based pixels).
--     Calls fn(w, x) for each block whose region is not empty, w the view of
--     the block's pixels that read the image and x the view of the image
--     they read (same shape; both freed after fn). fn copies (forward) or
--     accumulates the other way (backward: the adjoint).
local function span(d, n_in, n_out)   -- output start, input start, length (1-based) for offset d
  local o0 = math.max(0, -d)
  return o0 + 1, o0 + d + 1, math.min(n_out, n_in - d) - o0
end

return function(wide, img, shifts, fn)
  local s, o = img:shape(), wide:shape()
  local C, H, W, Ho, Wo = s[2], s[3], s[4], o[3], o[4]
  for k, d in ipairs(shifts) do
    local oy, iy, ny = span(d[1], H, Ho)
    local ox, ix, nx = span(d[2], W, Wo)
    if ny > 0 and nx > 0 then
      local w_c = wide:narrow(2, (k - 1) * C + 1, C)
      local w_r = w_c:narrow(3, oy, ny)
      local w = w_r:narrow(4, ox, nx)
      local i_r = img:narrow(3, iy, ny)
      local i = i_r:narrow(4, ix, nx)
      fn(w, i)
      w:free(); w_r:free(); w_c:free(); i:free(); i_r:free()
    end
  end
end
