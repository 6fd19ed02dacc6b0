"""Streaming RETAIN merge: `merged = pre + sum_i alpha_i[modality] * (ft_i - pre)`, per tensor.

Each floating tensor is processed in fixed-size chunks of its flattened data: read (pread) from
the pretrained and finetuned files, computed in float32 (float64 for F64 inputs), rounded once
to the input dtype, and written straight into the output shard. Peak anonymous memory is a few
chunk buffers (~100 MB) whatever the model size; the output appears atomically on success.

Exact endpoints: a model whose alpha is 0 contributes nothing (its term is dropped, so
`0 * inf` never turns into NaN and `-0.0 + 0.0` never flips a sign); when no term is left the
pretrained bytes are copied, and when one term with alpha 1 is left the finetuned bytes are
copied. So alpha 0 / 1 reproduce pre / ft bit for bit in every dtype, which float arithmetic
alone would not (e.g. fp32 `pre + (ft - pre)` rounds; bf16 with extreme magnitudes loses `ft`).

Non-floating tensors (integer buffers, step counters) must be equal in every input. Key sets,
shapes and dtypes must match, unless `on_mismatch="take-finetuned"`: then a tensor that differs
(or exists only in the finetuned checkpoints, or is a differing non-float buffer) is copied from
the first finetuned checkpoint holding it, and tensors only in the pretrained one are dropped.

Example:
    >>> from retain.partitions import get_partition_map
    >>> report = merge_checkpoints("pre", ["ft"], ["vision=1,language=0.8,action=1"],
    ...                            get_partition_map("openpi-pi0"), "merged", max_shard_bytes=2 << 30)
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch

from registry.checkpoint import (
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointWriter,
    TensorSpec,
    bytes_are_finite,
    open_checkpoint,
)
from registry.errors import RegistryError, invalid
from retain.alphas import MODALITIES, Alpha, as_alpha
from retain.partitions import PartitionMap, get_partition_map
from retain.streaming import (
    DEFAULT_CHUNK_ELEMS,
    TORCH_DTYPES,
    ChunkBuffers,
    FileReader,
    chunk_ranges,
    compute_dtype,
    raw_chunks,
)

ON_MISMATCH = ("error", "take-finetuned")
_SHOW = 5  # offending names quoted in an error message


@dataclasses.dataclass
class ModalityStats:
    tensors: int = 0
    params: int = 0
    alphas: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class MergeReport:
    """What a merge did: sizes, timings, per-modality counts, and any tensors taken as-is."""

    dest: str
    tensors: int
    params: int
    bytes_read: int
    bytes_written: int
    seconds: float
    modalities: dict[str, ModalityStats]
    copied_from_pre: int  # float tensors whose alphas were all 0
    copied_from_finetuned: int  # float tensors with a single alpha of 1
    taken_finetuned: list[str]  # on_mismatch="take-finetuned" picks, by name
    dropped: list[str]  # tensors only in the pretrained checkpoint, dropped by that policy


@dataclasses.dataclass
class _Job:
    """How one output tensor is produced."""

    spec: TensorSpec  # output layout (name, dtype, shape); file/offset unused
    kind: str  # "copy" (bytes of `source`) or "merge"
    source: TensorSpec | None = None
    pre: TensorSpec | None = None
    terms: tuple[tuple[TensorSpec, float], ...] = ()  # (finetuned spec, alpha) with alpha != 0
    modality: str | None = None


def merge_checkpoints(
    pre: str | os.PathLike,
    finetuned: Sequence[str | os.PathLike],
    alphas: Sequence[Alpha | float | str | dict],
    partition: PartitionMap | str | None,
    dest: str | os.PathLike,
    max_shard_bytes: int | None = None,
    progress: bool = True,
    on_mismatch: str = "error",
    extrapolate: bool = False,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> MergeReport:
    """Merge finetuned checkpoints into a pretrained one and write the result to `dest`.

    Args:
        pre: the pretrained (parent) checkpoint, a .safetensors file or a (sharded) folder.
        finetuned: one or more finetuned checkpoints of the same architecture.
        alphas: one alpha per finetuned checkpoint (Alpha, number, dict or "vision=..,..." string).
        partition: a PartitionMap, a preset name, or None when every alpha is a single number.
        dest: output path; `x.safetensors` for one file, otherwise a folder (sharded if needed).
        max_shard_bytes: shard size limit for folder output (None: one file).
        progress: show a progress bar when stderr is a terminal.
        on_mismatch: "error" or "take-finetuned" (see the module docstring).
        extrapolate: allow alphas outside [0, 1].
        chunk_elems: elements per processing chunk (bounds memory).

    Returns:
        A MergeReport. Raises RegistryError (nothing written at `dest`) on bad input, on
        mismatches under the "error" policy, and when the arithmetic produces NaN or inf.
    """
    t0 = time.perf_counter()
    if on_mismatch not in ON_MISMATCH:
        raise invalid(f"unknown mismatch policy {on_mismatch!r}; use {' or '.join(ON_MISMATCH)}")
    if not finetuned:
        raise invalid("merge needs at least one finetuned checkpoint")
    alphas = [as_alpha(a, extrapolate) for a in alphas]
    if len(alphas) == 1 and len(finetuned) > 1:
        alphas = alphas * len(finetuned)
    if len(alphas) != len(finetuned):
        raise invalid(f"got {len(alphas)} alphas for {len(finetuned)} finetuned checkpoints; give one alpha, or one per checkpoint")
    if isinstance(partition, str):
        partition = get_partition_map(partition)
    if partition is None and not all(a.is_uniform for a in alphas):
        raise invalid("a per-modality alpha needs a partition map; pass --preset NAME or --rules FILE")
    dest = Path(dest)
    if dest.exists():
        raise invalid(f"output {dest} already exists; choose a new path or remove it first")

    pre_ck = open_checkpoint(pre)
    ft_cks = [open_checkpoint(f) for f in finetuned]
    try:
        jobs, taken, dropped = _plan(pre_ck, ft_cks, alphas, partition, on_mismatch)
        metadata = {
            "format": "pt",
            "retain_merge": json.dumps(
                {"alphas": [a.to_json() for a in alphas], "partition": partition.name if partition else None, "on_mismatch": on_mismatch}
            ),
        }
        with FileReader() as reader:
            _check_plain_buffers(jobs, pre_ck, ft_cks, reader, on_mismatch, taken)
            stats = _execute(jobs, reader, dest, max_shard_bytes, metadata, progress, chunk_elems)
    finally:
        pre_ck.close()
        for c in ft_cks:
            c.close()

    modalities: dict[str, ModalityStats] = {}
    for job in jobs:
        if job.modality is None:
            continue
        m = modalities.setdefault(job.modality, ModalityStats(alphas=[a.for_modality(job.modality) for a in alphas]))
        m.tensors += 1
        m.params += job.spec.numel
    return MergeReport(
        dest=str(dest),
        tensors=len(jobs),
        params=sum(j.spec.numel for j in jobs),
        bytes_read=stats["read"],
        bytes_written=stats["written"],
        seconds=time.perf_counter() - t0,
        modalities=modalities,
        copied_from_pre=stats["copied_pre"],
        copied_from_finetuned=stats["copied_ft"],
        taken_finetuned=sorted(taken),
        dropped=sorted(dropped),
    )


# ---------------------------------------------------------------------------------------- planning


def _names_list(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _plan(
    pre: Checkpoint, fts: list[Checkpoint], alphas: list[Alpha], partition: PartitionMap | None, on_mismatch: str
) -> tuple[list[_Job], list[str], list[str]]:
    """Decide every output tensor before any byte is written; gather all problems first."""
    problems: list[str] = []
    ft_only: dict[str, int] = {}  # name -> first finetuned index holding it
    for i, ft in enumerate(fts):
        for name in ft.specs:
            if name not in pre.specs:
                ft_only.setdefault(name, i)
                problems.append(f"{name} (only in {ft.path})")
    mismatched: dict[str, int] = {}  # in pre, but missing or different in some finetuned
    dropped: list[str] = []
    for name, spec in pre.specs.items():
        for i, ft in enumerate(fts):
            other = ft.specs.get(name)
            if other is None:
                problems.append(f"{name} (missing from {ft.path})")
            elif other.shape != spec.shape:
                problems.append(f"{name} (shape {list(spec.shape)} vs {list(other.shape)} in {ft.path})")
            elif other.dtype != spec.dtype:
                problems.append(f"{name} (dtype {spec.dtype} vs {other.dtype} in {ft.path})")
            else:
                continue
            mismatched.setdefault(name, -1)
        if name in mismatched:
            holder = next((i for i, ft in enumerate(fts) if name in ft.specs), None)
            if holder is None:
                dropped.append(name)
            mismatched[name] = -1 if holder is None else holder
    if problems and on_mismatch == "error":
        raise invalid(
            f"checkpoints do not match: {_names_list(problems)}; merge checkpoints of the same model, "
            "or pass --on-mismatch take-finetuned to copy such tensors from the finetuned one"
        )

    jobs: list[_Job] = []
    unclaimed: list[str] = []
    # Output order follows the pretrained files' byte order so reads stay sequential.
    file_rank = {str(f): k for k, f in enumerate(pre.files)}
    for name in sorted(pre.specs, key=lambda n: (file_rank[pre.specs[n].file], pre.specs[n].offset)):
        spec = pre.specs[name]
        if name in mismatched:
            holder = mismatched[name]
            if holder >= 0:
                src = fts[holder].specs[name]
                jobs.append(_Job(src, "copy", source=src))
            continue
        if spec.dtype not in FLOAT_DTYPES:
            jobs.append(_Job(spec, "copy", source=spec))  # equality checked before writing
            continue
        modality = partition.modality_of(name) if partition else "other"
        if modality is None:
            modality = "other"
        values = [a.for_modality(modality) for a in alphas]
        if any(v is None for v in values):
            unclaimed.append(name)
            continue
        terms = tuple((ft.specs[name], float(v)) for ft, v in zip(fts, values) if v != 0.0)
        if not terms:
            jobs.append(_Job(spec, "copy", source=spec, modality=modality))
        elif len(terms) == 1 and terms[0][1] == 1.0:
            jobs.append(_Job(spec, "copy", source=terms[0][0], modality=modality))
        else:
            jobs.append(_Job(spec, "merge", pre=spec, terms=terms, modality=modality))
    if unclaimed:
        raise invalid(
            f"{len(unclaimed)} tensors match no rule of partition '{partition.name}' (e.g. {_names_list(unclaimed)}); "
            "add other=VALUE to the alpha, or a rule for them"
        )
    taken = [n for n, h in mismatched.items() if h >= 0]
    for name, i in sorted(ft_only.items(), key=lambda kv: (kv[1], kv[0])):
        if name in pre.specs:
            continue
        src = fts[i].specs[name]
        jobs.append(_Job(src, "copy", source=src))
        taken.append(name)
    return jobs, taken, dropped


def _check_plain_buffers(
    jobs: list[_Job], pre: Checkpoint, fts: list[Checkpoint], reader: FileReader, on_mismatch: str, taken: list[str]
) -> None:
    """Non-float tensors must be equal in every input; checked before writing starts."""
    differing: list[str] = []
    bufs = ChunkBuffers(1 << 20)
    for k, job in enumerate(jobs):
        spec = job.spec
        if spec.dtype in FLOAT_DTYPES or job.source is not pre.specs.get(spec.name):
            continue
        if any(not _same_bytes(reader, spec, ft.specs[spec.name], bufs) for ft in fts):
            if on_mismatch == "error":
                differing.append(spec.name)
            else:
                src = fts[0].specs[spec.name]
                jobs[k] = _Job(src, "copy", source=src)
                taken.append(spec.name)
    if differing:
        raise invalid(
            f"non-float tensors differ between checkpoints: {_names_list(differing)}; they must be equal to merge, "
            "or pass --on-mismatch take-finetuned to copy them from the finetuned one"
        )


def _same_bytes(reader: FileReader, a: TensorSpec, b: TensorSpec, bufs: ChunkBuffers) -> bool:
    return all(x == y for x, y in zip(raw_chunks(a, reader, bufs, "a"), raw_chunks(b, reader, bufs, "b")))


# ---------------------------------------------------------------------------------------- execution


def _execute(
    jobs: list[_Job],
    reader: FileReader,
    dest: Path,
    max_shard_bytes: int | None,
    metadata: dict[str, str],
    progress: bool,
    chunk_elems: int,
) -> dict[str, int]:
    from tqdm import tqdm

    specs = [TensorSpec(j.spec.name, j.spec.dtype, j.spec.shape) for j in jobs]
    total = sum(s.nbytes for s in specs)
    stats = {"read": 0, "written": 0, "copied_pre": 0, "copied_ft": 0}
    bufs = ChunkBuffers(chunk_elems)
    show = progress and sys.stderr.isatty()
    with tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not show, leave=False) as bar:
        with CheckpointWriter(dest, specs, max_shard_bytes, metadata) as writer:
            for job in jobs:
                if job.kind == "copy":
                    if job.modality is not None:
                        stats["copied_pre" if job.source is job.spec else "copied_ft"] += 1
                    parts = raw_chunks(job.source, reader, bufs)
                    stats["read"] += job.source.nbytes
                else:
                    parts = _merge_chunks(job, reader, bufs)
                    stats["read"] += job.spec.nbytes * (1 + len(job.terms))
                writer.write_parts(job.spec.name, _counted(parts, bar))
                stats["written"] += job.spec.nbytes
    return stats


def _counted(parts: Iterator, bar) -> Iterator:
    for p in parts:
        yield p
        bar.update(memoryview(p).nbytes)


def _merge_chunks(job: _Job, reader: FileReader, bufs: ChunkBuffers) -> Iterator[memoryview]:
    """Yield the merged tensor chunk by chunk: pre + sum_i a_i * (ft_i - pre), rounded once."""
    spec = job.pre
    tdtype = TORCH_DTYPES[spec.dtype]
    cdtype = compute_dtype(spec.dtype)
    size = spec.nbytes // max(spec.numel, 1)
    chunks = list(chunk_ranges(spec.numel, bufs.chunk_elems))
    for k, (start, n) in enumerate(chunks):
        if k + 1 < len(chunks):  # let the disk fetch the next chunk while we compute this one
            nstart, nn = chunks[k + 1]
            reader.prefetch(spec, nstart, nn)
            for ft_spec, _ in job.terms:
                reader.prefetch(ft_spec, nstart, nn)
        raw_pre = bufs.raw("pre", n * size)
        raw_ft = bufs.raw("ft", n * size)
        reader.read_into(spec, start, raw_pre)
        pre_c = bufs.calc("pre", cdtype, n)
        pre_c.copy_(raw_pre.view(tdtype))  # (n,) in float32/64
        diff = bufs.calc("diff", cdtype, n)
        total = bufs.calc("sum", cdtype, n) if len(job.terms) > 1 else diff
        for i, (ft_spec, alpha) in enumerate(job.terms):
            reader.read_into(ft_spec, start, raw_ft)
            diff.copy_(raw_ft.view(tdtype))
            diff.sub_(pre_c)
            diff.mul_(alpha)  # separate mul and add: no fused multiply-add, same bits everywhere
            if total is not diff:
                if i == 0:
                    total.copy_(diff)
                else:
                    total.add_(diff)
        total.add_(pre_c)
        out = bufs.raw("out", n * size)
        out.view(tdtype).copy_(total)  # the one rounding to the input dtype
        if not bytes_are_finite(out.numpy(), spec.dtype):
            raise _nonfinite(job.spec.name, total)
        yield memoryview(out.numpy())


def _nonfinite(name: str, computed: torch.Tensor) -> RegistryError:
    if not bool(torch.isfinite(computed).all()):
        why = "the inputs hold NaN/inf or the alphas extrapolate too far"
    else:
        why = "the result overflows the tensor's dtype"
    return invalid(f"merge produced NaN or inf in tensor {name} ({why}); nothing was written. Check the inputs or use smaller alphas")


def modalities_summary(report: MergeReport) -> str:
    """One line per modality: tensors, parameters, alphas."""
    lines = []
    for m in MODALITIES:
        s = report.modalities.get(m)
        if s:
            lines.append(f"  {m:<9} {s.tensors:>6} tensors {s.params:>14,} params  alpha {', '.join(f'{a:g}' for a in s.alphas)}")
    return "\n".join(lines)
