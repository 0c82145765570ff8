#!/usr/bin/env python3
# Golden data for Lunar's models-as-code leaves and containers (lua/lunar/nn):
# for each case a PyTorch module of the same name and shape, an input x, an
# output gradient dy, and PyTorch's output y, input gradient dx and parameter
# gradients by parameter name (the names Lunar's composition gives).
#
# Run (from the repository root, with Debian's PyTorch):
#     /usr/bin/python3 tests/golden/gen_leaves.py OUTPUT
# (tests/lua/test_models_as_code.lua runs it into a temporary file: the data
# is generated, never committed.) Writes OUTPUT (the writer of
# gen_golden.py, no safetensors package) holding, per case C:
#     C.x, C.dy              F32 inputs
#     C.param.<name>         F32 the module's weights (Lunar copies them in)
#     C.y, C.dx              F32 PyTorch's output and input gradient
#     C.grad.<name>          F32 PyTorch's parameter gradients
# and __metadata__ {"cases": "relu,silu,..."}; the nn.MultiheadAttention calls with
# separate query, key, value and masks (mha_tensors) under "mha_cases".
# Computed in float64 (module.double()) and stored as float32; Lunar compares
# in fp32 (tests/lua/test_models_as_code.lua).
#
# PyTorch 1.13 (Debian's) has no nn.RMSNorm (2.4+): the rmsnorm case is its
# formula in PyTorch, x * rsqrt(mean(x^2, -1) + eps) * weight, as nn.RMSNorm
# computes it. ClassToken + PositionEmbedding is timm's _pos_embed:
# cat(cls_token.expand(B, -1, -1), x) + pos_embed.
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import f32, write_safetensors  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MeanPool(nn.Module):
    def forward(self, x):
        return x.mean(1)


class Residual(nn.Module):
    def __init__(self, *mods):
        super().__init__()
        self.f = nn.Sequential(*mods)

    def forward(self, x):
        return x + self.f(x)

    def named_lunar(self):   # Lunar inlines f: its names are f's own
        return [(n[len("f."):], p) for n, p in self.named_parameters()]


class Concat(nn.Module):
    def __init__(self, dim, *mods):
        super().__init__()
        self.dim = dim
        self.ms = nn.ModuleList(mods)

    def forward(self, x):
        return torch.cat([m(x) for m in self.ms], self.dim)

    def named_lunar(self):   # Lunar names the children '0', '1', ...
        return [(n[len("ms."):], p) for n, p in self.named_parameters()]


class Parallel(nn.Module):   # torch/nn's nn.Parallel (dims 0-based here, 1-based in Lunar)
    def __init__(self, in_dim, out_dim, *mods):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.ms = nn.ModuleList(mods)

    def forward(self, x):
        return torch.cat([m(x.select(self.in_dim, i)) for i, m in enumerate(self.ms)], self.out_dim)

    def named_lunar(self):   # Lunar names the children '0', '1', ...
        return [(n[len("ms."):], p) for n, p in self.named_parameters()]


class SelfMHA(nn.Module):   # self-attention: query = key = value = x, batch first
    def __init__(self, e, h):
        super().__init__()
        self.mha = nn.MultiheadAttention(e, h, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]

    def named_lunar(self):   # Lunar's module is the MultiheadAttention itself: PyTorch's names
        return [(n[len("mha."):], p) for n, p in self.named_parameters()]


class TokenEmbed(nn.Module):
    def __init__(self, n, dim):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim))

    def forward(self, x):
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed


def cases():
    return [
        ("relu", nn.ReLU(), (2, 3, 5)),
        ("silu", nn.SiLU(), (2, 3, 5)),
        ("gelu", nn.GELU(), (2, 3, 5)),
        ("gelu_tanh", nn.GELU(approximate="tanh"), (2, 3, 5)),
        ("layernorm", nn.LayerNorm(5, eps=1e-6), (2, 3, 5)),
        ("rmsnorm", RMSNorm(5), (2, 3, 5)),
        ("linear", nn.Linear(5, 4), (2, 3, 5)),
        ("conv2d", nn.Conv2d(2, 3, 2, stride=2), (2, 2, 4, 6)),
        ("conv2d_same", nn.Conv2d(2, 3, 3, stride=1, padding=1), (2, 2, 5, 6)),
        ("conv2d_valid", nn.Conv2d(3, 2, 3, stride=1), (2, 3, 4, 5)),
        ("conv2d_pad2", nn.Conv2d(1, 2, 4, stride=1, padding=2), (1, 1, 3, 4)),
        ("meanpool", MeanPool(), (2, 4, 5)),
        ("sequential", nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 5)), (2, 3, 5)),
        ("residual", Residual(nn.LayerNorm(5, eps=1e-6), nn.Linear(5, 5)), (2, 3, 5)),
        ("concat", Concat(2, nn.Linear(5, 2), nn.Identity(), nn.Linear(5, 3)), (2, 3, 5)),
        ("tokens", TokenEmbed(4, 5), (2, 4, 5)),
        ("conv3d", nn.Conv3d(2, 3, 2, stride=2), (2, 2, 4, 2, 6)),
        ("parallel", Parallel(1, 1, nn.Linear(5, 2), nn.Identity(), nn.Linear(5, 3)), (2, 3, 5)),
        ("mha", SelfMHA(8, 2), (2, 5, 8)),
    ]


def mha_cases():
    """nn.MultiheadAttention(batch_first=True) called with separate query, key and
    value and PyTorch's masks: (name, E, H, kdim, vdim, B, L, S, masks), masks a list
    of 'kpm' (bool key_padding_mask [B, S], the last keys of image 0 padded),
    'causal' (bool attn_mask [L, S], True above the diagonal), 'float_bh' (float
    attn_mask [B*H, L, S])."""
    return [
        ("mha_kpm", 8, 2, 8, 8, 2, 5, 5, ["kpm"]),
        ("mha_causal", 8, 2, 8, 8, 2, 5, 5, ["causal"]),
        ("mha_cross_masks", 8, 2, 8, 8, 2, 3, 6, ["float_bh", "kpm"]),
        ("mha_kvdim", 8, 2, 6, 4, 2, 4, 3, []),
    ]


def mha_tensors():
    """The mha_cases as golden tensors, per case C: C.query, C.key, C.value, C.dy
    (inputs), C.key_padding_mask / C.attn_mask (F32: 1.0 where a bool mask is True,
    or the float mask), C.param.<name>, C.y, C.dquery, C.dkey, C.dvalue,
    C.grad.<name>; query, key and value are three tensors even for self-attention
    shapes (their gradients apart)."""
    tensors, names = [], []
    for name, e, h, kdim, vdim, b, l, s, masks in mha_cases():
        m = nn.MultiheadAttention(e, h, batch_first=True, kdim=kdim, vdim=vdim).double()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        q = torch.randn(b, l, e, dtype=torch.float64, requires_grad=True)
        k = torch.randn(b, s, kdim, dtype=torch.float64, requires_grad=True)
        v = torch.randn(b, s, vdim, dtype=torch.float64, requires_grad=True)
        kpm = am = None
        if "kpm" in masks:
            kpm = torch.zeros(b, s, dtype=torch.bool)
            kpm[0, s - 2:] = True
        if "causal" in masks:
            am = torch.ones(l, s, dtype=torch.bool).triu(1)
        if "float_bh" in masks:
            am = torch.randn(b * h, l, s, dtype=torch.float64)
        y = m(q, k, v, key_padding_mask=kpm, attn_mask=am, need_weights=False)[0]
        dy = torch.randn_like(y)
        y.backward(dy)
        tensors += [(f"{name}.query", f32(q)), (f"{name}.key", f32(k)), (f"{name}.value", f32(v)),
                    (f"{name}.dy", f32(dy)), (f"{name}.y", f32(y)), (f"{name}.dquery", f32(q.grad)),
                    (f"{name}.dkey", f32(k.grad)), (f"{name}.dvalue", f32(v.grad))]
        if kpm is not None:
            tensors.append((f"{name}.key_padding_mask", f32(kpm.double())))
        if am is not None:
            tensors.append((f"{name}.attn_mask", f32(am.double())))
        for pn, p in m.named_parameters():
            tensors += [(f"{name}.param.{pn}", f32(p)), (f"{name}.grad.{pn}", f32(p.grad))]
        names.append(name)
    return tensors, names


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_leaves.py OUTPUT")
    out = sys.argv[1]
    torch.manual_seed(17)
    tensors, names = [], []
    for name, m, shape in cases():
        m = m.double()
        with torch.no_grad():   # weights away from the defaults (LayerNorm/RMSNorm ones, zero bias)
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(*shape, dtype=torch.float64)
        if name == "relu":   # no element near the kink at 0
            x = x.sign() * (x.abs() + 0.1)
        x.requires_grad_(True)
        y = m(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        params = m.named_lunar() if hasattr(m, "named_lunar") else list(m.named_parameters())
        tensors += [(f"{name}.x", f32(x)), (f"{name}.dy", f32(dy)), (f"{name}.y", f32(y)), (f"{name}.dx", f32(x.grad))]
        for pn, p in params:
            tensors += [(f"{name}.param.{pn}", f32(p)), (f"{name}.grad.{pn}", f32(p.grad))]
        names.append(name)
    mt, mnames = mha_tensors()
    tensors += mt
    write_safetensors(out, tensors, {"cases": ",".join(names), "mha_cases": ",".join(mnames),
                                     "torch": torch.__version__})
    print(f"wrote {out}: {len(names)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
