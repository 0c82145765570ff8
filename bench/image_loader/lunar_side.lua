--- bench/image_loader/lunar_side.lua: one epoch of the image-folder loader
-- (training transform, ImageNet normalization, batch 64, no prefetch, THREADS
-- decode threads) over DIR; prints a row of run.sh's table.
local dir, threads, size = os.getenv('DIR'), tonumber(os.getenv('THREADS')) // 1, tonumber(os.getenv('IMG_SIZE')) // 1
local ds = lunar.data.image_folder(dir, {img_size = size, train = true})
local ld = lunar.data.loader(ds, {batch_size = 64, seed = 0, prefetch = false, threads = threads,
  mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}})
local n, t0 = 0, lunar.clock()
while true do
  local x = ld:next()
  if not x then break end
  n = n + x:size(1)
end
local s = lunar.clock() - t0
print(string.format('%-7s %7d %8d %10.2f %14.1f', 'lunar', threads, n, s, n / s / threads))
