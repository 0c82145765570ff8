--- lunar.nn.shifted_views: the shifted-copy pattern behind im2col
-- (nn.Conv2d with stride 1), Shifted Patch Tokenization (nn.ShiftedPatches)
-- and evaluation's shifted views (lunar.engine, EVAL_SHIFT): channel blocks
-- of a wide [B, n*C, ..., Ho, Wo] tensor, each a copy of a [B, C, ..., H, W]
-- image shifted by (dy, dx) pixels along its last two axes; the pixels that
-- would read outside the image are not visited (the caller's fill stays).
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
  local s, o, a = img:shape(), wide:shape(), img:dim()   -- rows: axis a - 1, columns: axis a
  local C, H, W, Ho, Wo = s[2], s[a - 1], s[a], o[a - 1], o[a]
  for k, d in ipairs(shifts) do
    local oy, iy, ny = span(d[1], H, Ho)
    local ox, ix, nx = span(d[2], W, Wo)
    if ny > 0 and nx > 0 then
      local w_c = wide:narrow(2, (k - 1) * C + 1, C)
      local w_r = w_c:narrow(a - 1, oy, ny)
      local w = w_r:narrow(a, ox, nx)
      local i_r = img:narrow(a - 1, iy, ny)
      local i = i_r:narrow(a, ix, nx)
      fn(w, i)
      w:free(); w_r:free(); w_c:free(); i:free(); i_r:free()
    end
  end
end
