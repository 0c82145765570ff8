#!/usr/bin/env python3
"""tests/golden/timm_check.py: Lunar <-> timm interoperability, run by
tests/fail/test_timm.sh in `make test` (Debian's python3-torch, timm and
safetensors from PyPI in a virtual environment; skipped where these are
missing).

What it checks, with timm's own VisionTransformer(img_size=32, patch_size=8,
in_chans=3, embed_dim=64, depth=2, num_heads=2, num_classes=10):
  1. timm writes its state_dict with safetensors.torch.save_file; Lunar's
     lunar.timm.load_pretrained reads it into nn.ViT and Lunar's logits equal
     timm's on the same input (eval mode) within 1e-4.
  2. Lunar trains that model one AdamW step and exports it with
     lunar.timm.export; a fresh timm model loads the file with
     model.load_state_dict(safetensors.torch.load_file(path)) (strict: same
     keys, shapes, F32, contiguous) and its logits equal Lunar's within 1e-4.
  3. Loading the 10-class checkpoint into a 5-class Lunar model keeps the head
     at its init and says so; the other weights load.
  4. Fine-tuning at another resolution: timm's VisionTransformer(img_size=28,
     patch_size=4) (a 7x7 grid) loaded into Lunar ViTs of img_size 40 (10x10)
     and 20 (5x5): Lunar's resampled pos_embed equals timm's
     resample_abs_pos_embed(new_size, num_prefix_tokens=1) (bicubic, its
     default antialias=True; and antialias=False with opts.antialias = false)
     within 1e-5, the class token bit for bit; and a timm model built at
     img_size 40 with timm's resampled pos_embed gives Lunar's logits within
     1e-4. The config key PRETRAINED (lunar.setup.from_config) loads the same
     weights; a missing file is an error naming the key and the file.

How to run by hand (from the repository root, after `make`):
    apt-get install python3-torch python3-torchvision python3-venv   # timm imports torchvision
    /usr/bin/python3 -m venv --system-site-packages /tmp/venv
    /tmp/venv/bin/pip install --no-deps timm==0.9.16 safetensors==0.4.5
    /tmp/venv/bin/python tests/golden/timm_check.py [path/to/lunar]
Debian 12's python3-torch (1.13) is enough. Prints one line per check and
"N passed, N failed"; exits 1 on a failure. A NaN fails every logits check
(torch's max propagates it, and NaN <= tol is false).
"""
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LUNAR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "lunar")
ARCH = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=2, num_classes=10)
TOL = 1e-4
RES_ARCH = dict(patch_size=4, in_chans=3, embed_dim=32, depth=1, num_heads=2, num_classes=10)
RES_TOL = 1e-5

LUA_RES = r"""
local nn = require('lunar.nn')
local timm = require('lunar.timm')
local D = lunar.args.rest[1]
local function vit(img)
  return nn.materialize(nn.ViT{img_size = img, patch_size = 4, in_chans = 3, embed_dim = 32, depth = 1,
    num_heads = 2, mlp_ratio = 4, num_classes = 10}, 3)
end
local msgs = {}
local function load(img, aa)
  local m = vit(img)
  timm.load_pretrained(m, D .. '/timm28.safetensors', {antialias = aa, log = function(s) msgs[#msgs + 1] = s end})
  return m
end
local up, down, up_noaa = load(40), load(20), load(40, false)
up:evaluate()
local x = lunar.io.load_safetensors(D .. '/input40.safetensors').x
local logits, ctx = up:forward(x)
ctx:free()
-- the config key PRETRAINED (lunar.setup): the same weights as load_pretrained's, and a bad path names the key
local keys = {'IMG_SIZE=40', 'PATCH_SIZE=4', 'IN_CHANS=3', 'HIDDEN_SIZE=32', 'DEPTH=1', 'NUM_HEADS=2',
  'NUM_CLASSES=10', 'DATASET=synthetic', 'OPTIMIZER=sgd', 'PRETRAINED=' .. D .. '/timm28.safetensors'}
local run = require('lunar.setup').from_config(nil, keys, {grid = false, loaders = false, quiet = true})
local same = 0
local by = {}
for _, p in ipairs(up:parameters()) do by[p.name] = p.param end
local n = 0
for _, p in ipairs(run.model:parameters()) do
  n = n + 1
  if (p.param - by[p.name]):norm() == 0 then same = same + 1 end
end
keys[#keys] = 'PRETRAINED=' .. D .. '/missing.safetensors'
local ok, err = pcall(require('lunar.setup').from_config, nil, keys, {grid = false, loaders = false, quiet = true})
lunar.io.save_safetensors(D .. '/lunar_res.safetensors', {pos40 = up.pos_embed, pos20 = down.pos_embed,
  pos40_noaa = up_noaa.pos_embed, logits40 = logits}, {message = msgs[1] or '', cfg_same = same .. '/' .. n,
  cfg_error = ok and '(no error)' or tostring(err)})
print('lunar: ' .. (msgs[1] or '(no message)'))
"""

LUA = r"""
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local timm = require('lunar.timm')
local D = lunar.args.rest[1]
local function vit(classes)
  return nn.materialize(nn.ViT{img_size = 32, patch_size = 8, in_chans = 3, embed_dim = 64, depth = 2,
    num_heads = 2, mlp_ratio = 4, num_classes = classes}, 1)
end
local io_in = lunar.io.load_safetensors(D .. '/input.safetensors')
local x, labels = io_in.x, io_in.labels
local model = vit(10)
local rep = timm.load_pretrained(model, D .. '/timm.safetensors')
model:evaluate()
local logits, ctx = model:forward(x)
ctx:free()
-- one training step, then the trained model's logits and its export
model:train()
local opt = optim.AdamW(model:parameters(), {lr = 1e-2, weight_decay = 0.05})
local out, c2 = model:forward(x)
local ce = nn.CrossEntropy{}
local loss, cctx = ce:forward(out, labels)
model:backward(c2, ce:backward(cctx, 1), false)
opt:step()
model:evaluate()
local trained, c3 = model:forward(x)
c3:free()
timm.export(model, D .. '/lunar_export.safetensors')
-- fine-tuning: 5 classes, the head skipped
local small = vit(5)
local head0 = small.head.weight:clone()
local msgs = {}
local rep5 = timm.load_pretrained(small, D .. '/timm.safetensors', {num_classes = 5, log = function(s) msgs[#msgs + 1] = s end})
local head_kept = (small.head.weight - head0):norm() == 0
local fc1_same = (small.blocks['0'].mlp.fc1.weight - model.blocks['0'].mlp.fc1.weight):norm()   -- model has trained
lunar.io.save_safetensors(D .. '/lunar_out.safetensors', {logits = logits, trained_logits = trained},
  {loaded = tostring(rep.loaded), loaded5 = tostring(rep5.loaded), skipped5 = table.concat(rep5.skipped, ','),
   head_kept = tostring(head_kept), message = msgs[1] or ''})
print('lunar: loaded ' .. rep.loaded .. ' tensors; 5-class model: ' .. (msgs[1] or '(no message)'))
"""


def run_lunar(script, d, name, check):
    """Writes script to d/name and runs it with Lunar (argument d); False (a failed check) when it fails."""
    with open(f"{d}/{name}", "w") as f:
        f.write(script)
    r = subprocess.run([LUNAR, f"{d}/{name}", "--", d], capture_output=True, text=True, cwd=ROOT)
    print(r.stdout.strip())
    if r.returncode != 0:
        print(r.stderr)
        check(f"lunar script {name} ran", False)
    return r.returncode == 0


def resolution_checks(d, check):
    """Check 4: pos_embed resampled as timm's resample_abs_pos_embed."""
    from timm.layers import resample_abs_pos_embed
    torch.manual_seed(1)
    m = VisionTransformer(img_size=28, **RES_ARCH).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, f"{d}/timm28.safetensors", metadata={"format": "pt"})
    x = torch.randn(2, 3, 40, 40)
    save_file({"x": x}, f"{d}/input40.safetensors")
    if not run_lunar(LUA_RES, d, "res.lua", check):
        return
    out = load_file(f"{d}/lunar_res.safetensors")
    pe = sd["pos_embed"]
    for key, grid, aa in (("pos40", 10, True), ("pos20", 5, True), ("pos40_noaa", 10, False)):
        want = resample_abs_pos_embed(pe, new_size=[grid, grid], num_prefix_tokens=1, antialias=aa)
        got = out[key]
        ok = got.shape == want.shape
        diff = (got - want).abs().max().item() if ok else float("inf")
        check(f"pos_embed 7x7 -> {grid}x{grid} (antialias={aa}) equals timm's resample_abs_pos_embed",
              ok and diff <= RES_TOL and torch.equal(got[:, :1], pe[:, :1]),
              f"(shape {list(got.shape)}, max abs diff {diff:.3g}, tol {RES_TOL}; class token unchanged)")
    with safe_open(f"{d}/lunar_res.safetensors", framework="pt") as f:
        meta = f.metadata()
    same, total = meta["cfg_same"].split("/")
    check("config key PRETRAINED (lunar.setup, img 40): every parameter equals load_pretrained's",
          same == total and int(total) > 0, f"({same} of {total} bit for bit)")
    err = meta["cfg_error"]
    check("PRETRAINED naming a missing file: an error naming the key and the file",
          "PRETRAINED" in err and "missing.safetensors" in err, f"({err.strip()[:160]})")
    m40 = VisionTransformer(img_size=40, **RES_ARCH).eval()
    sd40 = dict(sd)
    sd40["pos_embed"] = resample_abs_pos_embed(pe, new_size=[10, 10], num_prefix_tokens=1)
    m40.load_state_dict(sd40, strict=True)
    with torch.no_grad():
        ref = m40(x)
    diff = (out["logits40"] - ref).abs().max().item()
    check("fine-tuning at img 40 from img 28: logits equal timm's", diff <= TOL, f"(max abs diff {diff:.3g}, tol {TOL})")


def main():
    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"  ok {name} {detail}")
        else:
            failed += 1
            print(f"  FAIL {name} {detail}")

    torch.manual_seed(0)
    m = VisionTransformer(**ARCH).eval()
    with torch.no_grad():   # every parameter away from its init (LayerNorm 1/0, cls_token ~1e-6, zero biases)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([1, 7, 3, 0], dtype=torch.int32)
    with torch.no_grad():
        ref = m(x)
    with tempfile.TemporaryDirectory() as d:
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, f"{d}/timm.safetensors",
                  metadata={"format": "pt"})
        save_file({"x": x, "labels": labels}, f"{d}/input.safetensors")
        if not run_lunar(LUA, d, "check.lua", check):
            return 1
        out = load_file(f"{d}/lunar_out.safetensors")
        diff = (out["logits"] - ref).abs().max().item()
        check("timm -> Lunar: logits equal timm's", diff <= TOL, f"(max abs diff {diff:.3g}, tol {TOL})")

        sd = load_file(f"{d}/lunar_export.safetensors")
        want = m.state_dict()
        check("Lunar export: exactly timm's keys", sorted(sd) == sorted(want),
              f"({len(sd)} tensors)")
        check("Lunar export: F32, contiguous, timm's shapes",
              all(sd[k].dtype == torch.float32 and sd[k].is_contiguous() and sd[k].shape == want[k].shape
                  for k in want))
        m2 = VisionTransformer(**ARCH).eval()
        res = m2.load_state_dict(sd, strict=True)
        check("Lunar -> timm: load_state_dict(strict=True)", not res.missing_keys and not res.unexpected_keys)
        with torch.no_grad():
            got = m2(x)
        diff2 = (got - out["trained_logits"]).abs().max().item()
        check("Lunar -> timm: the trained model's logits equal Lunar's", diff2 <= TOL,
              f"(max abs diff {diff2:.3g}, tol {TOL})")
        moved = max((sd[k] - want[k]).abs().max().item() for k in want)
        check("the exported weights are the trained ones (they moved)", moved > 1e-4, f"(max change {moved:.3g})")

        meta = subprocess.run([LUNAR, "-e", f"local _, m = lunar.io.load_safetensors('{d}/lunar_out.safetensors');"
                               " print(m.head_kept, m.skipped5, m.loaded5)"], capture_output=True, text=True)
        head_kept, skipped5, loaded5 = meta.stdout.split()
        check("10-class checkpoint into a 5-class model: head kept at init, the rest loaded",
              head_kept == "true" and skipped5 == "head.bias,head.weight" and int(loaded5) == len(want) - 2,
              f"(skipped {skipped5}, loaded {loaded5})")
        resolution_checks(d, check)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
