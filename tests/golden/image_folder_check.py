#!/usr/bin/env python3
"""tests/golden/image_folder_check.py: the independent side of
tests/fail/test_image_folder.sh. Run with Debian's Python (python3-pil,
python3-torchvision, python3-numpy).

  image_folder_check.py make OUT FMNIST_DIR N    writes the test folders under OUT
  image_folder_check.py make_idx OUT FMNIST_DIR N  the same images as IDX files in OUT
  image_folder_check.py check KIND ROOT SAMPLES  compares Lunar's samples with PIL/torchvision

make: the first N Fashion-MNIST training images (IDX from FMNIST_DIR) as
grayscale PNG and JPEG (quality 90) folders OUT/png/train/<k>_<name>/NNNNN.png
and OUT/jpg/..., class directories named so that sorted order is the IDX
label order; OUT/photo_png/train and OUT/photo_jpg/train: colour images of
photo-like sizes (Fashion-MNIST upscaled bicubic, tinted) including extreme
aspect ratios, and PNG palette, LA and RGBA modes; val splits of the first
N / 2 t10k images; OUT/bad/train: good PNGs and a corrupt JPEG, a truncated
JPEG and a text file named .png; OUT/zip: the PNG folders as Galvatron's
train.zip + train_map.txt, val.zip + val_map.txt.

check: SAMPLES is the safetensors file tests/golden/image_folder_dump.lua
wrote. Checks, each against an independent implementation:
  order   (file, label) of every index equals torchvision's ImageFolder(ROOT).samples
  decode  (KIND decode: eval with crop_pct 1 at the image's own size, an identity
          resize) the pixels equal PIL's Image.open(f).convert('RGB'): exact for PNG;
          JPEG within 2 levels (libjpeg-turbo builds may differ in IDCT / upsampling)
  train   (KIND train) the crop box obeys RandomResizedCrop's rules (area in
          scale * area, w/h in ratio, up to rounding, or the center-crop fallback), and
          the sample equals torchvision.transforms.functional.resized_crop(img, top,
          left, h, w, S, BILINEAR) (then hflip when flipped) on the PIL image within 1
          level (PIL resamples in fixed point and rounds between its two passes;
          Lunar rounds once); where libjpeg's DCT scaling was used (scale_denom > 1), the
          mean absolute difference within 1 level (S 32; measured
          worst 0.55: libjpeg's scaled IDCT is not PIL's full decode)
  eval    (KIND eval) equals Resize(floor(S / 0.875)) + CenterCrop(S), same tolerances
Prints "N passed, N failed, N skipped"; exit status 1 on a failure.
"""
import gzip
import json
import math
import os
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = ['0_tshirt', '1_trouser', '2_pullover', '3_dress', '4_coat', '5_sandal', '6_shirt', '7_sneaker',
           '8_bag', '9_ankle_boot']


def idx_read(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def make(out, fdir, n):
    x = idx_read(os.path.join(fdir, 'train-images-idx3-ubyte.gz'))[:n]
    y = idx_read(os.path.join(fdir, 'train-labels-idx1-ubyte.gz'))[:n]
    vx = idx_read(os.path.join(fdir, 't10k-images-idx3-ubyte.gz'))[:n // 2]
    vy = idx_read(os.path.join(fdir, 't10k-labels-idx1-ubyte.gz'))[:n // 2]
    for kind in ('png', 'jpg'):
        for split, xs, ys in (('train', x, y), ('val', vx, vy)):
            for c in CLASSES:
                os.makedirs(os.path.join(out, kind, split, c), exist_ok=True)
            for i in range(len(xs)):
                im = Image.fromarray(xs[i], 'L')
                d = os.path.join(out, kind, split, CLASSES[ys[i]])
                if kind == 'png':
                    im.save(os.path.join(d, '%05d.png' % i))
                else:
                    im.save(os.path.join(d, '%05d.jpg' % i), quality=90)
    # Galvatron's zipped layout of the PNG folder: <split>.zip (members <class>/<file>, in ImageFolder's
    # order, plus a directory entry and a member the map does not name) and <split>_map.txt
    import zipfile
    os.makedirs(os.path.join(out, 'zip'), exist_ok=True)
    for split in ('train', 'val'):
        root = os.path.join(out, 'png', split)
        with zipfile.ZipFile(os.path.join(out, 'zip', split + '.zip'), 'w', zipfile.ZIP_DEFLATED) as z, \
                open(os.path.join(out, 'zip', split + '_map.txt'), 'w') as m:
            z.writestr('extra/', b'')
            for k, c in enumerate(CLASSES):
                for f in sorted(os.listdir(os.path.join(root, c))):
                    z.write(os.path.join(root, c, f), c + '/' + f)
                    m.write('%s.zip@/%s/%s\t%d\n' % (split, c, f, k))
            z.write(os.path.join(root, CLASSES[0], sorted(os.listdir(os.path.join(root, CLASSES[0])))[0]),
                    'unlisted/x.png')
    # bad files among good ones: a JPEG signature then garbage, a JPEG cut in half, text named .png
    for c in ('a', 'b'):
        os.makedirs(os.path.join(out, 'bad', 'train', c), exist_ok=True)
    for i in range(6):
        Image.fromarray(x[i], 'L').save(os.path.join(out, 'bad', 'train', 'ab'[i % 2], 'g%02d.png' % i))
    with open(os.path.join(out, 'bad', 'train', 'a', 'g00x_corrupt.jpg'), 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0' + bytes(range(256)) * 4)
    good = open(os.path.join(out, 'jpg', 'train', CLASSES[y[0]], '00000.jpg'), 'rb').read()
    with open(os.path.join(out, 'bad', 'train', 'b', 'g01x_truncated.jpg'), 'wb') as f:
        f.write(good[:len(good) // 2])
    with open(os.path.join(out, 'bad', 'train', 'b', 'g05x_text.png'), 'w') as f:
        f.write('not an image\n')
    sizes = [(160, 120), (120, 160), (500, 375), (300, 40), (40, 300), (64, 64), (200, 150), (33, 47)]
    for kind in ('photo_png', 'photo_jpg'):
        for c in ('a', 'b', 'c'):
            os.makedirs(os.path.join(out, kind, 'train', c), exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        g = np.asarray(Image.fromarray(x[i], 'L').resize((w, h), Image.BICUBIC), np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([g, 255 - g, (xx * 255.0 / w + yy * 128.0 / h) % 256], -1).astype(np.uint8)
        im = Image.fromarray(rgb, 'RGB')
        c = 'ab'[i % 2]
        im.save(os.path.join(out, 'photo_png', 'train', c, 'img%02d.png' % i))
        im.save(os.path.join(out, 'photo_jpg', 'train', c, 'img%02d.JPEG' % i), quality=92)
        if i < 3:   # other PNG colour types, as PIL converts them to RGB
            im.convert('P', palette=Image.ADAPTIVE).save(os.path.join(out, 'photo_png', 'train', 'c', 'p%02d.png' % i))
            im.convert('LA').save(os.path.join(out, 'photo_png', 'train', 'c', 'la%02d.png' % i))
            rgba = im.convert('RGBA')
            rgba.putalpha(Image.fromarray((np.arange(w * h) % 256).reshape(h, w).astype(np.uint8)))
            rgba.save(os.path.join(out, 'photo_png', 'train', 'c', 'rgba%02d.png' % i))
            im.save(os.path.join(out, 'photo_jpg', 'train', 'c', 'q%02d.jpeg' % i), quality=75)


def make_idx(out, fdir, n):
    """The same images as make's folders, as IDX files (gzip): train = the first n training images, t10k =
    the first n // 2 test images, named as Debian's dataset-fashion-mnist names them."""
    os.makedirs(out, exist_ok=True)
    for split, count in (('train', n), ('t10k', n // 2)):
        for kind, magic in (('images-idx3', 0x803), ('labels-idx1', 0x801)):
            name = '%s-%s-ubyte.gz' % (split, kind)
            a = idx_read(os.path.join(fdir, name))[:count]
            head = struct.pack('>I', magic) + b''.join(struct.pack('>I', d) for d in a.shape)
            with gzip.open(os.path.join(out, name), 'wb') as f:
                f.write(head + a.tobytes())


def read_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    head = json.loads(data[8:8 + n])
    meta = head.pop('__metadata__', {})
    base = 8 + n
    out = {}
    for k, v in head.items():
        assert v['dtype'] == 'U8', v
        a, b = v['data_offsets']
        out[k] = np.frombuffer(data[base + a:base + b], np.uint8).reshape(v['shape'])
    return out, meta


class Count:
    def __init__(self):
        self.p = self.f = self.s = 0

    def check(self, name, cond, detail=''):
        if cond:
            self.p += 1
        else:
            self.f += 1
            print('  FAIL %s %s' % (name, detail))

    def done(self):
        print('%d passed, %d failed, %d skipped' % (self.p, self.f, self.s))
        sys.exit(1 if self.f else 0)


def check(kind, root, samples_path):
    import torchvision.transforms as T
    import torchvision.transforms.functional as F
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import InterpolationMode
    cnt = Count()
    tensors, meta = read_safetensors(samples_path)
    samples = json.loads(meta['samples'])
    ref = ImageFolder(root)
    cnt.check('classes as ImageFolder', json.loads(meta['classes']) == ref.classes, str(ref.classes))
    by_index = {}
    for s in samples:
        by_index[s['i']] = (s['file'], s['label'])
    lunar_list = [by_index[i] for i in range(len(by_index))]
    ref_list = [(p, c) for p, c in ref.samples]
    cnt.check('files and labels as ImageFolder.samples (%d)' % len(ref_list), lunar_list == ref_list,
              str(lunar_list[:3]) + ' vs ' + str(ref_list[:3]))
    worst = {}
    for s in samples:
        img = tensors['s%d_%d' % (s['i'], s['epoch'])].astype(np.int32)
        pil = Image.open(s['file']).convert('RGB')
        W, H = pil.size
        c = s['crop']
        S = img.shape[1]
        jpeg = s['file'].lower().endswith(('.jpg', '.jpeg'))
        name = '%s %s e%d' % (kind, os.path.relpath(s['file'], root), s['epoch'])
        if kind == 'decode':
            want = np.asarray(pil).transpose(2, 0, 1).astype(np.int32)
        elif kind == 'train':
            t, l, h, w = c['top'], c['left'], c['height'], c['width']
            area, ratio = h * w / (W * H), w / h
            fallback = (t, l) == ((H - h) // 2, (W - w) // 2) and (h == H or w == W)
            # w, h are rounded from sqrt(area * ratio): allow the rounding (half a pixel each)
            lo_a, hi_a = (h - .5) * (w - .5) / (W * H), (h + .5) * (w + .5) / (W * H)
            lo_r, hi_r = (w - .5) / (h + .5), (w + .5) / (h - .5) if h > .5 else 1e9
            rules = fallback or (hi_a >= 0.08 and lo_a <= 1.0 and hi_r >= 0.75 and lo_r <= 4 / 3 and
                                 0 <= t <= H - h and 0 <= l <= W - w)
            cnt.check('crop rules ' + name, rules, str(c))
            out = F.resized_crop(pil, t, l, h, w, [S, S], InterpolationMode.BILINEAR)
            if c['flip']:
                out = F.hflip(out)
            want = np.asarray(out).transpose(2, 0, 1).astype(np.int32)
        else:
            R = math.floor(S / 0.875)
            out = T.Compose([T.Resize(R, InterpolationMode.BILINEAR), T.CenterCrop(S)])(pil)
            want = np.asarray(out).transpose(2, 0, 1).astype(np.int32)
        d = np.abs(img - want)
        key = ('jpeg' if jpeg else 'png') + (' dct1/%d' % c['scale_denom'] if c['scale_denom'] > 1 else '')
        worst[key] = max(worst.get(key, (0, 0)), (int(d.max()), float(d.mean())))
        if c['scale_denom'] > 1:
            cnt.check('pixels ' + name, d.mean() <= 1.0, 'mean |diff| %.2f (DCT 1/%d)' % (d.mean(), c['scale_denom']))
        else:
            tol = (0 if not jpeg else 2) if kind == 'decode' else 1
            cnt.check('pixels ' + name, d.max() <= tol, 'max |diff| %d > %d' % (d.max(), tol))
    for k, (mx, mean) in sorted(worst.items()):
        print('  %s: %s max |diff| %d, worst mean %.3f' % (kind, k, mx, mean))
    cnt.done()


if __name__ == '__main__':
    if sys.argv[1] == 'make':
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == 'make_idx':
        make_idx(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4])
