"""The finetuned delta: `ft - parent`, stored so `apply_delta` rebuilds `ft` bit for bit.

A delta is a safetensors checkpoint (file or folder) holding, per tensor of the finetuned model:

    delta/<name>      F32 (F64 for F64 tensors): float(ft) - float(parent), same shape
    fix_index/<name>  I64 (k,): flat positions where round(parent + delta) is not ft's bits
    fix_value/<name>  ft dtype (k,): ft's exact values there
    full/<name>       ft's tensor as is: non-float, new, reshaped or retyped tensors, and tensors
                      whose fix-ups would be too many to be worth it

For the usual finetune the fix-ups are few or none: the float32 difference of two bf16/fp16 values
is exact, so adding it back rounds to ft. They catch what float arithmetic cannot carry: signed
zeros (0 + -0 = +0), NaN payloads, inf - inf, differences too far apart in magnitude (1e30 vs
1e-30), and fp32 differences that round. Metadata records the format version, the tensors the
finetune removed, and the canonical weight hashes of parent and finetuned model; `apply_delta`
checks both while it writes and publishes nothing unless the rebuilt weights hash to the recorded
finetuned hash. Both functions stream in bounded memory, two reads of each input for
`write_delta` (count fix-ups, then write), one for `apply_delta`.

Learn runs recorded since registry packs keep the finetune as a pack instead (retain.finetune_store,
whose `recorded_finetuned` reads both).

Example:
    >>> write_delta("v3/", "finetuned/", "delta/")
    >>> apply_delta("v3/", "delta/", "rebuilt/")    # weight_hash(rebuilt) == weight_hash(finetuned)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import torch

from registry.checkpoint import (
    DTYPE_SIZES,
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointWriter,
    TensorSpec,
    spec_line,
    open_checkpoint,
)
from registry.errors import corrupt, invalid
from retain.streaming import (
    DEFAULT_CHUNK_ELEMS,
    TORCH_DTYPES,
    ChunkBuffers,
    FileReader,
    chunk_ranges,
    compute_dtype,
    raw_chunks,
)

FORMAT = "retain-delta"
VERSION = "1"
# A tensor needing more fix-ups than this is stored whole: bounds memory and keeps deltas honest.
MAX_FIX_FRACTION = 1 / 16
MAX_FIXES = 1 << 22

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclasses.dataclass
class DeltaReport:
    dest: str
    tensors: int  # tensors of the finetuned model
    delta_tensors: int  # stored as float deltas
    full_tensors: int  # stored whole
    fixups: int  # exact fix-up values over all delta tensors
    removed: list[str]
    parent_hash: str
    finetuned_hash: str


def _delta_dtype(dtype: str) -> str:
    return "F64" if dtype == "F64" else "F32"


def _fix_budget(numel: int) -> int:
    return min(int(numel * MAX_FIX_FRACTION), MAX_FIXES)


class _Hasher:
    """weight_hash computed on the fly: feed tensors in name order, chunk by chunk."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def start(self, spec: TensorSpec) -> None:
        self.h.update(spec_line(spec))

    def update(self, chunk) -> None:
        self.h.update(chunk)

    def hexdigest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _delta_chunks(
    pre: TensorSpec, ft: TensorSpec, reader: FileReader, bufs: ChunkBuffers, hashers: tuple[_Hasher, _Hasher] | None = None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (start, delta, fix positions within the chunk, ft chunk as raw bits) for each chunk."""
    tdtype, cdtype = TORCH_DTYPES[ft.dtype], compute_dtype(ft.dtype)
    size = DTYPE_SIZES[ft.dtype]
    bits = _BITS[size]
    for start, n in chunk_ranges(ft.numel, bufs.chunk_elems):
        raw_pre, raw_ft = bufs.raw("pre", n * size), bufs.raw("ft", n * size)
        reader.read_into(pre, start, raw_pre)
        reader.read_into(ft, start, raw_ft)
        if hashers:
            hashers[0].update(raw_pre.numpy())
            hashers[1].update(raw_ft.numpy())
        pre_c = bufs.calc("pre", cdtype, n)
        pre_c.copy_(raw_pre.view(tdtype))
        delta = bufs.calc("delta", cdtype, n)
        delta.copy_(raw_ft.view(tdtype))
        delta.sub_(pre_c)
        rebuilt = bufs.raw("rebuilt", n * size)
        rebuilt.view(tdtype).copy_(pre_c.add_(delta))
        fixes = torch.nonzero(rebuilt.view(bits) != raw_ft.view(bits)).flatten()
        yield start, delta, fixes, raw_ft.view(bits)


def _hash_stream(spec: TensorSpec, reader: FileReader, bufs: ChunkBuffers, hasher: _Hasher) -> None:
    hasher.start(spec)
    for chunk in raw_chunks(spec, reader, bufs, "hash"):
        hasher.update(chunk)


def write_delta(
    parent: str | os.PathLike,
    finetuned: str | os.PathLike,
    dest: str | os.PathLike,
    max_shard_bytes: int | None = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> DeltaReport:
    """Store `finetuned` relative to `parent` at `dest` (file if it ends in .safetensors, else folder)."""
    with open_checkpoint(parent) as pre, open_checkpoint(finetuned) as ft, FileReader() as reader:
        bufs = ChunkBuffers(chunk_elems)
        plan, fix_counts, pre_hash, ft_hash = _count_fixes(pre, ft, reader, bufs)
        removed = sorted(set(pre.specs) - set(ft.specs))
        specs: list[TensorSpec] = []
        for name in sorted(ft.specs):
            spec = ft.specs[name]
            if plan[name] == "delta":
                k = fix_counts[name]
                specs.append(TensorSpec(f"delta/{name}", _delta_dtype(spec.dtype), spec.shape))
                if k:
                    specs += [TensorSpec(f"fix_index/{name}", "I64", (k,)), TensorSpec(f"fix_value/{name}", spec.dtype, (k,))]
            else:
                specs.append(TensorSpec(f"full/{name}", spec.dtype, spec.shape))
        metadata = {
            "format": FORMAT, "version": VERSION, "removed": json.dumps(removed),
            "parent_hash": pre_hash, "finetuned_hash": ft_hash,
        }
        with CheckpointWriter(dest, specs, max_shard_bytes, metadata) as w:
            for name in sorted(ft.specs):
                spec = ft.specs[name]
                if plan[name] != "delta":
                    w.write_parts(f"full/{name}", raw_chunks(spec, reader, bufs))
                    continue
                index_parts, value_parts = [], []

                def deltas():
                    for start, delta, fixes, raw_ft in _delta_chunks(pre.specs[name], spec, reader, bufs, None):
                        if fixes.numel():
                            index_parts.append(fixes + start)
                            value_parts.append(raw_ft[fixes].clone())
                        yield memoryview(delta.numpy()).cast("B")

                w.write_parts(f"delta/{name}", deltas())
                if fix_counts[name]:
                    w.write(f"fix_index/{name}", torch.cat(index_parts).numpy())
                    w.write(f"fix_value/{name}", torch.cat(value_parts).view(torch.uint8).numpy())
    n_delta = sum(1 for v in plan.values() if v == "delta")
    return DeltaReport(str(dest), len(plan), n_delta, len(plan) - n_delta, sum(fix_counts.values()), removed, pre_hash, ft_hash)


def _count_fixes(pre: Checkpoint, ft: Checkpoint, reader: FileReader, bufs: ChunkBuffers):
    """First pass: decide delta vs whole per tensor, count fix-ups, hash both models."""
    plan: dict[str, str] = {}
    counts: dict[str, int] = {}
    pre_h, ft_h = _Hasher(), _Hasher()
    for name in sorted(set(pre.specs) | set(ft.specs)):
        p, f = pre.specs.get(name), ft.specs.get(name)
        if f is None:
            _hash_stream(p, reader, bufs, pre_h)
            continue
        if p is None or p.dtype != f.dtype or p.shape != f.shape or f.dtype not in FLOAT_DTYPES:
            if p is not None:
                _hash_stream(p, reader, bufs, pre_h)
            _hash_stream(f, reader, bufs, ft_h)
            plan[name] = "full"
            continue
        pre_h.start(p)
        ft_h.start(f)
        k = 0
        for _, _, fixes, _ in _delta_chunks(p, f, reader, bufs, (pre_h, ft_h)):
            k += fixes.numel()
        if k > _fix_budget(f.numel):
            plan[name] = "full"
        else:
            plan[name] = "delta"
            counts[name] = k
    return plan, counts, pre_h.hexdigest(), ft_h.hexdigest()


def apply_delta(
    parent: str | os.PathLike,
    delta: str | os.PathLike,
    dest: str | os.PathLike,
    max_shard_bytes: int | None = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> Path:
    """Rebuild the finetuned weights at `dest` from `parent` and the delta, bit for bit.

    Raises RegistryError if the delta is not a retain delta, was made against another parent,
    or does not rebuild to its recorded finetuned hash (nothing is written then).
    """
    with open_checkpoint(parent) as pre, open_checkpoint(delta) as d, FileReader() as reader:
        if d.metadata.get("format") != FORMAT:
            raise invalid(f"{delta} is not a retain delta (metadata format {d.metadata.get('format')!r}); pass a folder written by write_delta")
        if d.metadata.get("version") != VERSION:
            raise invalid(f"{delta} is delta format version {d.metadata.get('version')}; this code reads version {VERSION}")
        removed = set(json.loads(d.metadata.get("removed", "[]")))
        out_specs = _output_specs(pre, d, removed, delta)
        bufs = ChunkBuffers(chunk_elems)
        pre_h, out_h = _Hasher(), _Hasher()
        with CheckpointWriter(dest, [TensorSpec(s.name, s.dtype, s.shape) for s in out_specs], max_shard_bytes) as w:
            for name in sorted(set(pre.specs) | {s.name for s in out_specs}):
                p = pre.specs.get(name)
                if name in removed or f"full/{name}" in d.specs:
                    if p is not None:
                        _hash_stream(p, reader, bufs, pre_h)
                    if name in removed:
                        continue
                    src = d.specs[f"full/{name}"]
                    out_h.start(TensorSpec(name, src.dtype, src.shape))
                    w.write_parts(name, _hashed(raw_chunks(src, reader, bufs), out_h))
                    continue
                pre_h.start(p)
                out_h.start(p)
                w.write_parts(name, _hashed(_apply_chunks(p, d, name, reader, bufs, pre_h), out_h))
            if pre_h.hexdigest() != d.metadata.get("parent_hash"):
                raise invalid(
                    f"delta {delta} was made against parent {d.metadata.get('parent_hash')} but {parent} is {pre_h.hexdigest()}; "
                    "apply it to the parent it was made from"
                )
            if out_h.hexdigest() != d.metadata.get("finetuned_hash"):
                raise corrupt(f"delta {delta} rebuilt weights hashing {out_h.hexdigest()}, not the recorded {d.metadata.get('finetuned_hash')}; the delta is damaged")
    return Path(dest)


def _output_specs(pre: Checkpoint, d: Checkpoint, removed: set[str], delta_path) -> list[TensorSpec]:
    out = []
    for key, spec in d.specs.items():
        kind, _, name = key.partition("/")
        if kind == "full":
            out.append(TensorSpec(name, spec.dtype, spec.shape))
        elif kind == "delta":
            p = pre.specs.get(name)
            if p is None or p.shape != spec.shape or _delta_dtype(p.dtype) != spec.dtype:
                raise invalid(f"delta {delta_path} has tensor {name} that does not fit {pre.path}; apply it to the parent it was made from")
            out.append(TensorSpec(name, p.dtype, p.shape))
        elif kind not in ("fix_index", "fix_value"):
            raise invalid(f"{delta_path} holds unexpected tensor {key!r}; it is not a retain delta")
    names = {s.name for s in out}
    for name in pre.specs:
        if name not in names and name not in removed:
            raise invalid(f"delta {delta_path} says nothing about {name} of {pre.path}; apply it to the parent it was made from")
    return sorted(out, key=lambda s: s.name)


def _hashed(parts: Iterator, hasher: _Hasher) -> Iterator:
    for p in parts:
        hasher.update(p)
        yield p


def _apply_chunks(p: TensorSpec, d: Checkpoint, name: str, reader: FileReader, bufs: ChunkBuffers, pre_h: _Hasher) -> Iterator:
    tdtype, cdtype = TORCH_DTYPES[p.dtype], compute_dtype(p.dtype)
    size = DTYPE_SIZES[p.dtype]
    bits = _BITS[size]  # fix-ups are placed as raw bits: exact, and fp8 has no indexing kernels
    dspec = d.specs[f"delta/{name}"]
    fix_idx = fix_val = None
    if f"fix_index/{name}" in d.specs:
        fix_idx = torch.from_numpy(d.array(f"fix_index/{name}").copy())
        fix_val = torch.frombuffer(bytearray(d.read(f"fix_value/{name}")), dtype=bits)
    for start, n in chunk_ranges(p.numel, bufs.chunk_elems):
        raw_pre = bufs.raw("pre", n * size)
        reader.read_into(p, start, raw_pre)
        pre_h.update(raw_pre.numpy())
        raw_delta = bufs.raw("delta", n * DTYPE_SIZES[dspec.dtype])
        reader.read_into(dspec, start, raw_delta)
        acc = bufs.calc("acc", cdtype, n)
        acc.copy_(raw_pre.view(tdtype))
        acc.add_(raw_delta.view(cdtype))
        out = bufs.raw("out", n * size)
        out.view(tdtype).copy_(acc)
        if fix_idx is not None:
            sel = (fix_idx >= start) & (fix_idx < start + n)
            out.view(bits)[fix_idx[sel] - start] = fix_val[sel]
        yield memoryview(out.numpy())

