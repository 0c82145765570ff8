#!/usr/bin/env python3
# The PyTorch side of bench/gpu_throughput (a benchmark, not a test): the same
# ViT as bench/vs_pytorch_peer.py (timm's layout) trained on one CUDA device,
# f32 with TF32 matmuls (--tf32 1, the default) or full f32 (--tf32 0), or bf16
# autocast (--bf16 1), with PyTorch's fused SDPA attention and the fused AdamW.
# Timed step = zero_grad + forward + loss + backward + AdamW step, then a
# device synchronization. Prints ONE JSON line {"framework":"pytorch",...}.
#   python3 bench/gpu_throughput_peer.py --img 224 --patch 16 --dim 768 --depth 12 --heads 12 --batch 64
import argparse
import importlib.util
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

spec = importlib.util.spec_from_file_location(
    "vs_pytorch_peer", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vs_pytorch_peer.py"))
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)


def sdpa_forward(self, x):   # the peer's Attention with PyTorch's fused kernel
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
    return self.proj(x)


def main():
    ap = argparse.ArgumentParser()
    for k, d in (("img", 224), ("patch", 16), ("chans", 3), ("dim", 768), ("depth", 12), ("heads", 12),
                 ("classes", 1000), ("batch", 64), ("steps", 20), ("warmup", 5), ("tf32", 1), ("bf16", 0)):
        ap.add_argument("--" + k, type=int, default=d)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
    torch.backends.cudnn.allow_tf32 = bool(a.tf32)
    peer.Attention.forward = sdpa_forward
    dev = torch.device("cuda")
    model = peer.VisionTransformer(a.img, a.patch, a.chans, a.dim, a.depth, a.heads, 4.0, a.classes).to(dev)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n in ("pos_embed", "cls_token") else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}],
                            lr=1e-3, fused=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, a.chans, a.img, a.img, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    times = []
    for i in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    tokens = (a.img // a.patch) ** 2 + 1
    flops = 6 * params * tokens + 12 * a.depth * tokens * tokens * a.dim
    print(json.dumps({
        "framework": "pytorch", "device": torch.cuda.get_device_name(),
        "precision": "bf16 autocast" if a.bf16 else ("f32 (TF32 matmuls)" if a.tf32 else "f32"),
        "images_per_s": a.batch / med, "step_ms_median": med * 1e3, "tflops_per_s": a.batch / med * flops / 1e12,
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20, "params": params, "batch": a.batch,
        "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
