#!/usr/bin/env python3
# bench/fmnist_fast_peer.py: configs/vit_fmnist_fast.lua's recipe in PyTorch,
# the peer of Lunar's time-to-accuracy run (a benchmark, not a test).
#
# The same ViT as bench/vs_pytorch_peer.py (timm layout) at the recipe's dims
# (patch 7, width 128, depth 4, 4 heads, MLP 4x, 10 classes; --model hybrid_vit:
# the recipe's MODEL = 'hybrid_vit', mean-pooled tokens, no class token;
# --patch, --depth, --mlp-ratio; --shift: SHIFTED_PATCHES; --stem C:
# STEM_CHANNELS, a 3x3 convolution to C channels + GELU before the patch
# embedding), PyTorch's module
# default init for the Linear layers (the config's INIT = 'pytorch'), trained
# on Fashion-MNIST (the IDX files, normalized with mean 0.2860, std 0.3530)
# with RandomCrop(28, padding=1) of zero pixels (--crop-padding) and a
# horizontal flip of probability --hflip (default 0) drawn per sample, batch 128 (last partial batch dropped), AdamW lr 2e-3,
# weight decay 0.05 on the >= 2-D weights except pos_embed and cls_token,
# label smoothing 0.1, linear warmup over the first epoch then cosine decay to
# 0 per step, bf16 autocast (--bf16 0: fp32). The test split is evaluated once
# at the end (batches of 500; --eval-hflip 1: the mean of the logits of each
# image and its mirror, the config's EVAL_HFLIP; --eval-shift N: also over
# each shifted N pixels up, down, left and right, the border the normalized
# black pixel, EVAL_SHIFT). Prints ONE JSON line: wall seconds from start
# (data loading and evaluation included), training images/s, test accuracy.
#
#   LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_WAIT_POLICY=PASSIVE \
#   OMP_NUM_THREADS=2 /usr/bin/python3 bench/fmnist_fast_peer.py [--epochs 15] [--data DIR]
import argparse
import gzip
import json
import math
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vs_pytorch_peer import Block, VisionTransformer  # noqa: E402


class HybridViT(nn.Module):
    """Lunar's MODEL = 'hybrid_vit' (lua/lunar/models.lua): Conv2d patch
    embedding, LayerNorm(eps 1e-5) on the tokens, a learned position
    embedding, no class token, pre-LN blocks, mean over the tokens, a linear
    head (no final norm). LayerNorms eps 1e-5 as Lunar's (the ViT's Block has 1e-6)."""

    def __init__(self, img, patch, chans, dim, depth, heads, mlp_ratio, classes, shift=0, stem=0):
        super().__init__()
        self.shift = shift   # SHIFTED_PATCHES: the image and 4 diagonal shifts on the channels
        chans = chans * (5 if shift else 1)
        # STEM_CHANNELS: 3x3 convolution (stride 1, padding 1) + GELU before the patch embedding
        self.stem = nn.Sequential(nn.Conv2d(chans, stem, 3, stride=1, padding=1), nn.GELU()) if stem else None
        self.conv = nn.Conv2d(stem or chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = 1e-5
        self.head = nn.Linear(dim, classes)

    def shifted(self, x):
        # Shifted Patch Tokenization's input (Lee et al. 2021): copy k at (i, j) is
        # x at (i + dy, j + dx), zero outside, (dy, dx) = (-s,-s), (-s,s), (s,-s), (s,s)
        s, H, W = self.shift, x.shape[2], x.shape[3]
        p = F.pad(x, (s, s, s, s))
        views = [p[:, :, s + dy:s + dy + H, s + dx:s + dx + W] for dy, dx in ((-s, -s), (-s, s), (s, -s), (s, s))]
        return torch.cat([x] + views, dim=1)

    def forward(self, x):
        if self.shift:
            x = self.shifted(x)
        if self.stem is not None:
            x = self.stem(x)
        x = self.norm(self.conv(x).flatten(2).transpose(1, 2)) + self.pos_embed
        return self.head(self.blocks(x).mean(1))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--crop-padding", type=int, default=1)
    ap.add_argument("--hflip", type=float, default=0.0)
    ap.add_argument("--model", choices=("vit", "hybrid_vit"), default="vit")
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--shift", type=int, default=0, help="--model hybrid_vit: SHIFTED_PATCHES (0: off)")
    ap.add_argument("--stem", type=int, default=0, help="--model hybrid_vit: STEM_CHANNELS (0: off)")
    ap.add_argument("--eval-hflip", type=int, default=0, help="1: test-time flip (EVAL_HFLIP)")
    ap.add_argument("--eval-shift", type=int, default=0, help="pixels: test-time shifts (EVAL_SHIFT; 0: off)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)

    def load(split):
        x = torch.from_numpy(read_idx(os.path.join(a.data, f"{split}-images-idx3-ubyte.gz")).copy())
        y = torch.from_numpy(read_idx(os.path.join(a.data, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64))
        return x, y

    xtr, ytr = load("train")
    xte, yte = load("t10k")
    mean, std = 0.2860, 0.3530
    norm = lambda u8: (u8.float() / 255.0 - mean) / std  # noqa: E731

    cls = HybridViT if a.model == "hybrid_vit" else VisionTransformer
    model = cls(28, a.patch, 1, 128, a.depth, 4, a.mlp_ratio, 10,
                **({"shift": a.shift, "stem": a.stem} if a.model == "hybrid_vit" else {}))
    for m in model.modules():   # INIT = 'pytorch': the Linear layers' module defaults
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n in ("pos_embed", "cls_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": 0.05}], lr=a.lr)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    per_epoch = xtr.shape[0] // a.batch
    total, warmup = per_epoch * a.epochs, per_epoch

    def lr_at(step):   # linear warmup, then cosine to 0
        if step < warmup:
            return a.lr * (step + 1) / warmup
        return a.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    step, t_train = 0, 0.0
    model.train()
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(xtr.shape[0], generator=g)
        for b in range(per_epoch):
            idx = perm[b * a.batch:(b + 1) * a.batch]
            P = a.crop_padding
            xb = nn.functional.pad(xtr[idx], (P, P, P, P))          # zero pixels
            off = torch.randint(0, 2 * P + 1, (a.batch, 2), generator=g)
            xb = torch.stack([xb[i, off[i, 0]:off[i, 0] + 28, off[i, 1]:off[i, 1] + 28] for i in range(a.batch)])
            flip = torch.rand(a.batch, generator=g) < a.hflip
            xb = torch.where(flip[:, None, None], xb.flip(-1), xb)
            xb = norm(xb).unsqueeze(1)
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16 != 0):
                loss = criterion(model(xb), ytr[idx])
            loss.backward()
            opt.step()
            step += 1
        t_train += time.perf_counter() - t0
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, {per_epoch * a.batch / (time.perf_counter() - t0):.0f} img/s",
              file=sys.stderr, flush=True)
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16 != 0):
        for b in range(0, xte.shape[0], 500):
            xb = norm(xte[b:b + 500]).unsqueeze(1)
            bases = [xb, xb.flip(-1)] if a.eval_hflip else [xb]
            s = a.eval_shift
            shifts = [(0, 0)] + ([(-s, 0), (s, 0), (0, -s), (0, s)] if s else [])
            black = -mean / std
            logits = 0
            for dy, dx in shifts:
                for base in bases:
                    # pixel (i, j) of the view is base's (i + dy, j + dx), black outside
                    v = F.pad(base, (s, s, s, s), value=black)[:, :, s + dy:s + dy + 28, s + dx:s + dx + 28] if s else base
                    logits = logits + model(v).float()
            correct += (logits.argmax(-1) == yte[b:b + 500]).sum().item()
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "epochs": a.epochs,
                      "bf16": a.bf16 != 0, "threads": a.threads, "crop_padding": a.crop_padding,
                      "hflip": a.hflip, "model": a.model, "stem": a.stem, "eval_hflip": a.eval_hflip, "eval_shift": a.eval_shift,
                      "train_images_per_s": round(per_epoch * a.batch * a.epochs / max(t_train, 1e-9), 1),
                      "test_accuracy": correct / xte.shape[0],
                      "wall_s": round(time.perf_counter() - T0, 1)}), flush=True)


if __name__ == "__main__":
    main()
