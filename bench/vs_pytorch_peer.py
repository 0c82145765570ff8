#!/usr/bin/env python3
# The PyTorch side of bench/vs_pytorch (a benchmark, not a test).
#
# Trains a pre-LN ViT with timm's VisionTransformer layout (Conv2d patch
# embedding, cls token, learned position embedding, fused qkv with bias,
# MLP with exact GELU, final LayerNorm eps 1e-6, linear head on the cls token),
# fp32 (or --bf16 1: forward and loss under torch.autocast('cpu', torch.bfloat16),
# fp32 master weights), timm-style init, no dropout, on one fixed batch of
# random data; attention through F.scaled_dot_product_attention where the
# PyTorch has it (2.0 on; --sdpa 0 or PyTorch 1.x: the explicit softmax), with
# cross-entropy (label smoothing 0.1) and AdamW (lr 1e-3, weight decay 0.05 on
# ndim >= 2 weights except pos_embed and cls_token).
# Timed step = zero_grad + forward + loss + backward + AdamW step.
# Prints ONE JSON line:
#   {"framework":"pytorch","images_per_s":..,"step_ms_median":..,"peak_rss_mb":..,
#    "params":..,"threads":..,...}
# images_per_s = batch / median step time; step_cpu_ms_median: the median
# process CPU time of a step (all threads); peak_rss_mb = ru_maxrss / 1024.
#
# Run it as bench/vs_pytorch does (see PERF_ANCHORS.md: without the OpenMP
# OpenBLAS, OpenBLAS's own threads fight torch's and it is 1.5-2.3x slower):
#   LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_WAIT_POLICY=PASSIVE \
#   OMP_NUM_THREADS=2 /usr/bin/python3 bench/vs_pytorch_peer.py --img 28 --patch 4 \
#     --chans 1 --dim 192 --depth 6 --heads 3 --classes 10 --batch 128 --threads 2
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

USE_SDPA = hasattr(F, "scaled_dot_product_attention")


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if USE_SDPA:
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img, patch, chans, dim):
        super().__init__()
        self.num_patches = (img // patch) ** 2
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads, mlp_ratio, classes):
        super().__init__()
        self.patch_embed = PatchEmbed(img, patch, chans, dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        self._init()

    def _init(self):
        # timm's default ('') init: trunc_normal(.02) linears with zero bias,
        # pos_embed trunc_normal(.02), cls_token normal(1e-6), LayerNorm 1/0,
        # the patch conv keeps PyTorch's default init.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--img", type=int, default=28)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--chans", type=int, default=1)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", type=int, default=0, help="1: bf16 autocast (CPU)")
    ap.add_argument("--sdpa", type=int, default=1, help="0: never F.scaled_dot_product_attention")
    a = ap.parse_args()
    global USE_SDPA
    USE_SDPA = USE_SDPA and a.sdpa != 0

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = VisionTransformer(a.img, a.patch, a.chans, a.dim, a.depth, a.heads,
                              a.mlp_ratio, a.classes)
    model.train()
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n in ("pos_embed", "cls_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": 0.05}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, a.chans, a.img, a.img)
    y = torch.randint(0, a.classes, (a.batch,))

    times, cpu_times = [], []
    loss = None
    for i in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16 != 0):
            loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
            cpu_times.append(time.process_time() - c0)

    med = statistics.median(times)
    rec = {
        "framework": "pytorch",
        "images_per_s": round(a.batch / med, 3),
        "step_ms_median": round(med * 1e3, 3),
        "step_ms_min": round(min(times) * 1e3, 3),
        "step_ms_max": round(max(times) * 1e3, 3),
        "step_cpu_ms_median": round(statistics.median(cpu_times) * 1e3, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "steps": a.steps, "warmup": a.warmup, "batch": a.batch,
        "img": a.img, "patch": a.patch, "chans": a.chans, "dim": a.dim, "depth": a.depth,
        "heads": a.heads, "mlp_ratio": a.mlp_ratio, "classes": a.classes,
        "final_loss": round(loss.item(), 5),
        "torch": torch.__version__,
        "precision": "bf16 autocast" if a.bf16 else "fp32",
        "sdpa": USE_SDPA,
    }
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
