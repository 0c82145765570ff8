#!/usr/bin/env python3
# Golden data for Lunar's ViT: a tiny timm-layout VisionTransformer in plain
# PyTorch (no timm import), its input, logits, loss, gradients, the weights
# after one AdamW step, and the loss over 10 steps.
#
# Run (from the repository root, with Debian's PyTorch):
#     /usr/bin/python3 tests/golden/gen_golden.py [OUTPUT]
# Writes OUTPUT (default tests/golden/vit_tiny.safetensors), a safetensors file
# written by hand (no safetensors package) holding:
#     input            F32 [4,2,8,8]
#     target           I32 [4]
#     param.<name>     F32  initial weights, timm names (patch_embed.proj.weight, ...)
#     logits           F32 [4,5]
#     loss             F32 [1]   CrossEntropy(label_smoothing=0.1), mean
#     grad.<name>      F32  gradient of that loss for every parameter
#     step1.<name>     F32  weights after one AdamW step
#     losses10         F32 [10] from the initial weights and a fresh optimizer,
#                      the loss at steps 0..9 on the same batch
#                      (loss, then backward, then step)
# and __metadata__ with every hyperparameter as a string.
#
# Everything is computed in float64 (model.double()) and stored as float32, so
# the file carries no fp32 rounding noise of PyTorch's own; Lunar compares in
# fp32 within 1e-4 relative.
#
# Architecture (timm VisionTransformer, class token, no dropout):
#   x = patch_embed.proj(img)            Conv2d(C, dim, kernel=stride=P)
#   x = flatten(2).transpose(1,2)        [B, L, dim]
#   x = cat(cls_token, x) + pos_embed    [B, L+1, dim]
#   per block: x = x + attn(norm1(x)); x = x + mlp(norm2(x))
#     attn: qkv = Linear(dim, 3dim, bias) -> reshape(B,N,3,H,D).permute(2,0,3,1,4)
#           softmax(q k^T * D^-0.5) v -> transpose(1,2).reshape(B,N,dim) -> proj
#     mlp:  fc1(dim, dim*mlp_ratio) -> exact GELU -> fc2
#   LayerNorm eps 1e-6 everywhere; logits = head(norm(x)[:, 0])
# AdamW with timm's weight-decay grouping: decay 0.05 on ndim >= 2 parameters
# except pos_embed and cls_token; no decay on 1-D parameters, pos_embed, cls_token.
#
# Caveat for tests: the key bias, blocks.N.attn.qkv.bias[dim:2*dim], has an
# analytically zero gradient (softmax over keys is shift invariant), stored as
# ~1e-18. In fp32 it comes out as rounding noise, and AdamW's first step,
# lr*g/(|g|+eps), turns noise into an update of up to lr: compare those entries
# of step1.* with an absolute tolerance of lr. The key bias does not affect the
# output, so the logits, loss and losses10 are unaffected.
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

CFG = dict(
    img_size=8, in_chans=2, patch_size=4, dim=16, depth=2, heads=2,
    mlp_ratio=4, num_classes=5, batch=4, ln_eps=1e-6, label_smoothing=0.1,
    lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05,
)
NO_WEIGHT_DECAY = ("pos_embed", "cls_token")


class PatchEmbed(nn.Module):
    def __init__(self, img, patch, chans, dim):
        super().__init__()
        self.num_patches = (img // patch) ** 2
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


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
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads, mlp_ratio, classes, eps):
        super().__init__()
        self.patch_embed = PatchEmbed(img, patch, chans, dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def init_weights(model):
    """Healthy-scale random weights, so gradients are not tiny."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in NO_WEIGHT_DECAY:
                p.copy_(0.2 * torch.randn_like(p))
            elif ".norm" in name or name.startswith("norm."):
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith(".weight"):  # linears and the patch conv
                nn.init.trunc_normal_(p, std=0.2, a=-0.4, b=0.4)
            else:  # linear / conv biases
                p.copy_(0.1 * torch.randn_like(p))


def make_optimizer(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name in NO_WEIGHT_DECAY:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": CFG["weight_decay"]},
    ]
    return torch.optim.AdamW(groups, lr=CFG["lr"], betas=(CFG["beta1"], CFG["beta2"]),
                             eps=CFG["eps"])


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, np.ndarray) in file order; dtypes f4 or i4."""
    dtypes = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        assert a.dtype in dtypes, (name, a.dtype)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[info["dtype"]]
        out[name] = np.frombuffer(data[base + b:base + e], dtype=dt).reshape(info["shape"])
    return out, meta, header


def f32(t):
    return t.detach().cpu().numpy().astype("<f4")


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "vit_tiny.safetensors")
    c = CFG
    torch.manual_seed(0)
    model = VisionTransformer(c["img_size"], c["patch_size"], c["in_chans"], c["dim"],
                              c["depth"], c["heads"], c["mlp_ratio"], c["num_classes"],
                              c["ln_eps"])
    init_weights(model)
    model = model.double()
    x = torch.randn(c["batch"], c["in_chans"], c["img_size"], c["img_size"], dtype=torch.float64)
    target = torch.randint(0, c["num_classes"], (c["batch"],))
    criterion = nn.CrossEntropyLoss(label_smoothing=c["label_smoothing"])

    init_state = copy.deepcopy(model.state_dict())
    names = [n for n, _ in model.named_parameters()]

    # Forward, loss, backward, one AdamW step.
    opt = make_optimizer(model)
    opt.zero_grad()
    logits = model(x)
    loss = criterion(logits, target)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    step1 = {n: p.detach().clone() for n, p in model.named_parameters()}

    # Ten steps from the initial weights with a fresh optimizer.
    model.load_state_dict(init_state)
    opt = make_optimizer(model)
    losses = []
    for i in range(10):
        opt.zero_grad()
        l = criterion(model(x), target)
        losses.append(l.item())
        l.backward()
        opt.step()
        if i == 0:
            for n, p in model.named_parameters():
                assert torch.equal(p.detach(), step1[n]), n
    assert losses[0] == loss.item()

    tensors = [("input", f32(x)), ("target", target.numpy().astype("<i4"))]
    tensors += [("param." + n, f32(init_state[n])) for n in names]
    tensors += [("logits", f32(logits)), ("loss", f32(loss.reshape(1)))]
    tensors += [("grad." + n, f32(grads[n])) for n in names]
    tensors += [("step1." + n, f32(step1[n])) for n in names]
    tensors += [("losses10", np.array(losses, dtype="<f4"))]

    meta = {k: repr(v) if isinstance(v, float) else str(v) for k, v in c.items()}
    meta.update({
        "format_version": "1",
        "no_weight_decay": ",".join(NO_WEIGHT_DECAY),
        "generator": "tests/golden/gen_golden.py",
        "torch": torch.__version__,
        "compute_dtype": "float64",
        "qkv_bias": "true",
        "gelu": "exact",
        "loss": "cross_entropy_mean",
        "optimizer": "adamw",
        "seed": "0",
        # The key part of the qkv bias has an analytically zero gradient (the
        # softmax over keys is invariant to it); PyTorch in float64 gives ~1e-18,
        # an fp32 implementation gives rounding noise ~1e-9, and AdamW's first
        # step lr*g/(|g|+eps) turns that noise into an update of up to ~lr.
        "zero_grad_entries": "blocks.N.attn.qkv.bias[dim:2*dim]",
        "step1_note": "compare step1 of zero_grad_entries with absolute tolerance lr, not relative",
    })
    write_safetensors(out_path, tensors, meta)

    # Read back and check.
    back, bmeta, header = read_safetensors(out_path)
    assert bmeta == meta
    assert list(back) == [n for n, _ in tensors]
    for n, a in tensors:
        assert back[n].dtype == a.dtype and back[n].shape == a.shape and np.array_equal(back[n], a), n
    nparams = sum(int(np.prod(init_state[n].shape)) for n in names)
    print(f"wrote {out_path}: {os.path.getsize(out_path)} bytes, {len(tensors)} tensors, "
          f"{len(names)} parameters ({nparams} values)")
    print(f"loss {loss.item():.6f}; losses10 " + " ".join(f"{v:.4f}" for v in losses))


if __name__ == "__main__":
    main()
