--- tests/golden/image_folder_dump.lua: writes the samples Lunar makes from an
-- image folder to a safetensors file for tests/golden/image_folder_check.py to
-- compare with PIL and torchvision (run by tests/fail/test_image_folder.sh).
-- Environment: DIR (the split directory), OUT (the .safetensors path), TRAIN
-- (1 or 0), SIZE (IMG_SIZE), CROP_PCT, EPOCHS (how many epochs per image),
-- SEED. Tensor "s<i>_<e>" is sample i of epoch e (u8 [3, S, S]); the metadata
-- key "samples" is a JSON list of {i, epoch, label, file, crop}.
local json = require('lunar.json')
local env = function(k, d) return os.getenv(k) or d end
local train = env('TRAIN', '1') == '1'
local ds = lunar.data.image_folder(env('DIR'), {img_size = tonumber(env('SIZE')) // 1, train = train,
  crop_pct = tonumber(env('CROP_PCT', '0.875'))})
local epochs, seed = tonumber(env('EPOCHS', '1')) // 1, tonumber(env('SEED', '0')) // 1
local tensors, list = {}, {}
for i = 0, ds:count() - 1 do
  for e = 0, epochs - 1 do
    local img, label, crop = ds:sample(i, e, seed)
    tensors[string.format('s%d_%d', i, e)] = img
    list[#list + 1] = {i = i, epoch = e, label = label, file = ds:file(i), crop = crop}
  end
end
local classes = {}
for k = 1, ds:num_classes() do classes[k] = ds:class_name(k) end
lunar.io.save_safetensors(env('OUT'), tensors, {samples = json.encode(list), classes = json.encode(classes)})
print(string.format('%d samples written', #list))
