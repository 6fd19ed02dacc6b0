"""Streaming RETAIN merge: `merged = pre + sum_i alpha_i[modality] * (ft_i - pre)`, per tensor.

Tensors stream through three stages at once: a reader thread `pread`s 16 MB blocks of the
flattened tensors from the pretrained and finetuned files into a few reused slots, the calling
thread computes each block in cache-sized chunks in float32 (float64 for F64 inputs) and rounds
once to the input dtype, and a writer thread appends the result to the output shard. Nothing is
memory-mapped and no tensor is ever held whole, so peak anonymous memory is those buffers
(~150 MB) plus torch itself, whatever the model size (pi0's 1 GB embedding included). The
output appears atomically on success (CheckpointWriter: temporary folder, then one rename).

Rounding: per element, d = f(ft) - f(pre), t = f(alpha) * d, m = f(pre) + t (with N models the
terms are summed first, in argument order, then added to pre), each step in the compute dtype f
(float32, or float64 for F64), and m is rounded once to the tensor's dtype. alpha itself is
rounded to f first. Multiply and add stay separate (no fused multiply-add), so the bytes are the
same on every machine and replays reproduce them.

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
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch

from registry.checkpoint import (
    DTYPE_SIZES,
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointWriter,
    TensorSpec,
    bytes_are_finite,
    open_checkpoint,
)
from registry.errors import RegistryError, already_exists, invalid
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
    torch_threads,
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
class _TensorPlan:
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
    threads: int | None = 1,
    config: dict | None = None,
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
        threads: torch intra-op threads during the merge (None: leave torch's setting).
        config: written as config.json beside the weights when `dest` is a folder (what
            `base import` and `eval` read to know the policy).

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
        raise already_exists(f"output {dest} already exists; choose a new path or remove it first")

    pre_ck = open_checkpoint(pre)
    ft_cks = [open_checkpoint(f) for f in finetuned]
    try:
        jobs, taken, dropped = _plan(pre_ck, ft_cks, alphas, partition, on_mismatch)
        metadata = {
            "format": "pt",
            "retain_merge": json.dumps(
                {"alphas": [a.per_modality() for a in alphas], "partition": partition.name if partition else None, "on_mismatch": on_mismatch}
            ),
        }
        with FileReader() as reader, torch_threads(threads):
            _check_plain_buffers(jobs, pre_ck, ft_cks, reader, on_mismatch, taken)
            extra = {"config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()} if config else None
            stats = _execute(jobs, reader, dest, max_shard_bytes, metadata, progress, chunk_elems, extra)
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
) -> tuple[list[_TensorPlan], list[str], list[str]]:
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

    jobs: list[_TensorPlan] = []
    unclaimed: list[str] = []
    # Output order follows the pretrained files' byte order so reads stay sequential.
    file_rank = {str(f): k for k, f in enumerate(pre.files)}
    for name in sorted(pre.specs, key=lambda n: (file_rank[pre.specs[n].file], pre.specs[n].offset)):
        spec = pre.specs[name]
        if name in mismatched:
            holder = mismatched[name]
            if holder >= 0:
                src = fts[holder].specs[name]
                jobs.append(_TensorPlan(src, "copy", source=src))
            continue
        if spec.dtype not in FLOAT_DTYPES:
            jobs.append(_TensorPlan(spec, "copy", source=spec))  # equality checked before writing
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
            jobs.append(_TensorPlan(spec, "copy", source=spec, modality=modality))
        elif len(terms) == 1 and terms[0][1] == 1.0:
            jobs.append(_TensorPlan(spec, "copy", source=terms[0][0], modality=modality))
        else:
            jobs.append(_TensorPlan(spec, "merge", pre=spec, terms=terms, modality=modality))
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
        jobs.append(_TensorPlan(src, "copy", source=src))
        taken.append(name)
    return jobs, taken, dropped


def _check_plain_buffers(
    jobs: list[_TensorPlan], pre: Checkpoint, fts: list[Checkpoint], reader: FileReader, on_mismatch: str, taken: list[str]
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
                jobs[k] = _TensorPlan(src, "copy", source=src)
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
    jobs: list[_TensorPlan],
    reader: FileReader,
    dest: Path,
    max_shard_bytes: int | None,
    metadata: dict[str, str],
    progress: bool,
    chunk_elems: int,
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, int]:
    """Three stages at once: a thread reads blocks, this thread computes, a thread writes them."""
    from tqdm import tqdm

    specs = [TensorSpec(j.spec.name, j.spec.dtype, j.spec.shape) for j in jobs]
    total = sum(s.nbytes for s in specs)
    stats = {"read": 0, "written": 0, "copied_pre": 0, "copied_ft": 0}
    bufs = ChunkBuffers(chunk_elems)
    show = progress and sys.stderr.isatty()
    widest = max((1 + len(j.terms) for j in jobs), default=1)
    block_bytes = max(_BLOCK_BYTES // widest, min(_BLOCK_BYTES, 1 << 20))
    out = _AsyncWriter(CheckpointWriter(dest, specs, max_shard_bytes, metadata, extra_files=extra_files), [s.name for s in specs], block_bytes)
    with tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not show, leave=False) as bar, \
            _BlockReader(jobs, reader, block_bytes) as blocks, out:
        for k, job in enumerate(jobs):
            if job.kind == "copy":
                if job.modality is not None:
                    stats["copied_pre" if job.source is job.spec else "copied_ft"] += 1
                stats["read"] += job.source.nbytes
            else:
                stats["read"] += job.spec.nbytes * (1 + len(job.terms))
            for block in blocks.of_job(k):
                nbytes = block.n * DTYPE_SIZES[job.spec.dtype]
                slot, buf = out.buffer()
                if job.kind == "copy":
                    buf[:nbytes].copy_(block.raws[0])
                else:
                    _merge_block(job, block, buf[:nbytes], bufs)
                out.submit(slot, nbytes)
                bar.update(nbytes)
            out.end_tensor()
            stats["written"] += job.spec.nbytes
    return stats


_END, _ABORT = object(), object()


class _AsyncWriter:
    """Feeds a CheckpointWriter from a background thread so disk writes overlap the arithmetic.

    The producer takes a free buffer with `buffer()`, fills it and hands it over with `submit`;
    `end_tensor()` closes the current tensor. Leaving the `with` block commits (or, on an
    exception, aborts: nothing appears at the destination).
    """

    def __init__(self, writer: CheckpointWriter, names: list[str], buf_bytes: int, slots: int = 3):
        self.writer, self.names = writer, names
        self.bufs = [torch.empty(buf_bytes + 8, dtype=torch.uint8) for _ in range(slots)]
        self.todo: queue.Queue = queue.Queue()
        self.free: queue.Queue = queue.Queue()
        for i in range(slots):
            self.free.put(i)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="merge-writer", daemon=True)

    def __enter__(self) -> "_AsyncWriter":
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.todo.put(_ABORT)
            self.thread.join()
            return
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            for name in self.names:
                self.writer.write_parts(name, self._parts())
            self.writer.commit()
        except BaseException as e:  # re-raised in the producer's thread
            self.error = e
            self.writer.abort()

    def _parts(self) -> Iterator[memoryview]:
        while True:
            item = self.todo.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted()
            slot, n = item
            try:
                yield memoryview(self.bufs[slot][:n].numpy())
            finally:
                self.free.put(slot)

    def buffer(self) -> tuple[int, torch.Tensor]:
        while True:
            try:
                slot = self.free.get(timeout=0.2)
                return slot, self.bufs[slot]
            except queue.Empty:
                if self.error is not None or not self.thread.is_alive():
                    raise self.error or RuntimeError("merge writer stopped")

    def submit(self, slot: int, nbytes: int) -> None:
        self.todo.put((slot, nbytes))

    def end_tensor(self) -> None:
        self.todo.put(_END)


class _Aborted(Exception):
    """The producer failed; the writer thread stops and removes its temporary files."""


# Bytes read per input per block. A background thread reads the next blocks (of this tensor or
# the following ones) while the main thread computes and writes, so disk and arithmetic overlap;
# large sequential reads per file keep the disk from seeking between pre and finetuned files.
_BLOCK_BYTES = 16 << 20
_SLOTS = 3  # one being computed, up to two read ahead


@dataclasses.dataclass
class _Block:
    start: int
    n: int
    raws: list[torch.Tensor]  # raw bytes per input: [pre, ft_1, ...] for a merge, [source] for a copy
    slot: int


class _BlockReader:
    """Reads every job's inputs block by block in a background thread, into a few reused slots."""

    def __init__(self, jobs: list[_TensorPlan], reader: FileReader, block_bytes: int):
        self.jobs, self.reader, self.block_bytes = jobs, reader, block_bytes
        self.ready: queue.Queue = queue.Queue()
        self.free: queue.Queue = queue.Queue()
        for slot in range(_SLOTS):
            self.free.put(slot)
        self.buffers: dict[tuple[int, int], torch.Tensor] = {}
        self.stop = False
        self.thread = threading.Thread(target=self._run, name="merge-reader", daemon=True)

    def __enter__(self) -> "_BlockReader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop = True
        for slot in range(_SLOTS):  # unblock a reader waiting for a slot
            self.free.put(slot)
        self.thread.join()

    def _sources(self, job: _TensorPlan) -> list[TensorSpec]:
        return [job.source] if job.kind == "copy" else [job.pre] + [t for t, _ in job.terms]

    def _elems(self, job: _TensorPlan) -> int:
        return max(self.block_bytes // DTYPE_SIZES[job.spec.dtype], 1)

    def _run(self) -> None:
        try:
            for job in self.jobs:
                sources = self._sources(job)
                size = DTYPE_SIZES[job.spec.dtype]
                step = self._elems(job)
                for start, n in chunk_ranges(job.spec.numel, step):
                    slot = self.free.get()
                    if self.stop:
                        return
                    for spec in sources:  # queue the next block's reads in the kernel too
                        self.reader.prefetch(spec, start + n, min(step, spec.numel - start - n))
                    raws = []
                    for i, spec in enumerate(sources):
                        buf = self.buffers.get((slot, i))
                        if buf is None:
                            buf = self.buffers[(slot, i)] = torch.empty(self.block_bytes + 8, dtype=torch.uint8)
                        raw = buf[: n * size]
                        self.reader.read_into(spec, start, raw)
                        raws.append(raw)
                    self.ready.put(_Block(start, n, raws, slot))
        except BaseException as e:  # handed to the consumer, which raises it
            self.ready.put(e)

    def of_job(self, k: int) -> Iterator[_Block]:
        """The blocks of job `k`, in order; each block's slot is recycled when the next is asked for."""
        job = self.jobs[k]
        for _ in chunk_ranges(job.spec.numel, self._elems(job)):
            item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            try:
                yield item
            finally:
                self.free.put(item.slot)


def _merge_block(job: _TensorPlan, block: _Block, out: torch.Tensor, bufs: ChunkBuffers) -> None:
    """Write pre + sum_i a_i * (ft_i - pre) for one block into `out` (raw bytes), rounded once.

    Computed in cache-sized chunks (bufs.chunk_elems) in float32 (float64 for F64).
    """
    tdtype = TORCH_DTYPES[job.spec.dtype]
    cdtype = compute_dtype(job.spec.dtype)
    size = DTYPE_SIZES[job.spec.dtype]
    alphas = [a for _, a in job.terms]
    for start, n in chunk_ranges(block.n, bufs.chunk_elems):
        lo, hi = start * size, (start + n) * size
        pre_c = bufs.calc("pre", cdtype, n)
        pre_c.copy_(block.raws[0][lo:hi].view(tdtype))  # (n,) in float32/64
        diff = bufs.calc("diff", cdtype, n)
        total = bufs.calc("sum", cdtype, n) if len(alphas) > 1 else diff
        for i, alpha in enumerate(alphas):
            diff.copy_(block.raws[1 + i][lo:hi].view(tdtype))
            diff.sub_(pre_c)
            diff.mul_(alpha)  # separate mul and add: no fused multiply-add, same bits everywhere
            if total is not diff:
                if i == 0:
                    total.copy_(diff)
                else:
                    total.add_(diff)
        total.add_(pre_c)
        out[lo:hi].view(tdtype).copy_(total)  # the one rounding to the input dtype
        if not bytes_are_finite(out[lo:hi].numpy(), job.spec.dtype):
            raise _nonfinite(job.spec.name, total)


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
