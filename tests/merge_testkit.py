"""Helpers for the merge, delta and partition tests: write and read small safetensors checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from registry.checkpoint import open_checkpoint, save_tensors
from retain.streaming import TORCH_DTYPES

DTYPE_CODES = {v: k for k, v in TORCH_DTYPES.items()} | {
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL", torch.int8: "I8",
}
_INT_VIEW = {"F64": torch.int64, "F32": torch.int32, "F16": torch.int16, "BF16": torch.int16}


def write(path: str | Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None = None) -> Path:
    raw = {n: (DTYPE_CODES[t.dtype], tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
           for n, t in tensors.items()}
    return save_tensors(path, raw, max_shard_bytes=max_shard_bytes)


def read(path: str | Path) -> dict[str, torch.Tensor]:
    out = {}
    with open_checkpoint(path) as ck:
        for name, spec in ck.specs.items():
            inv = {v: k for k, v in DTYPE_CODES.items()}
            data = bytearray(ck.read(name))
            t = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
            out[name] = t.view(inv[spec.dtype]).reshape(spec.shape)
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN payloads and signed zeros count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8))


def adversarial(dtype: torch.dtype, n: int, seed: int, nonfinite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre, ft) pairs: mostly a small finetune step, plus signed zeros, inf, NaN, huge, subnormal."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(n, generator=g, dtype=torch.float64)
    ft = pre + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    pre, ft = pre.to(dtype), ft.to(dtype)
    fi = torch.finfo(dtype)
    specials = [
        (0.0, -0.0), (-0.0, 0.0), (-0.0, -0.0),
        (fi.max, -fi.max), (fi.max / 2, fi.max), (1.0, fi.max), (fi.max, 1e-3),
        (fi.tiny / 4, -fi.tiny / 8), (fi.tiny, fi.tiny / 2), (fi.smallest_normal / 3, 0.0),
        (1e4, 1e-6), (1e-6, 1e4), (3.0, -3.0),
    ]
    if nonfinite:
        inf, nan = float("inf"), float("nan")
        specials += [(inf, inf), (-inf, inf), (nan, 1.0), (1.0, nan), (inf, 2.0), (2.0, -inf)]
    for i, (p, f) in enumerate(specials):
        pre[10 + 3 * i] = p
        ft[10 + 3 * i] = f
    return pre, ft
