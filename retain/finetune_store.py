"""How a learn run keeps its finetune: a pack (registry/pack.py) against its extrapolation from the merge.

The merge is `parent + alpha * (ft - parent)` per modality, so `parent + (merged - parent) / alpha`
lands on ft wherever alpha is 1 and within a unit or two in the last place elsewhere: ft packed
against that reference costs a few bits a weight instead of a second copy of the update. The
reference is made by the same streaming merge (retain.merge: separate multiply and add, the same
bits on every machine) with 1 / alpha, extrapolating; where a modality was merged at alpha 0
nothing of the finetune is left in the merge, so the reference there is the parent. The pack
records how its reference was made (preset and alpha), and `recorded_finetuned` makes it again and
unpacks, checking the reference's and the finetune's hashes. Runs recorded before packs keep
retain.delta's F32 delta against the parent, which `recorded_finetuned` reads too.

Example:
    >>> store_finetune(parent, merged, finetuned, alpha, "builtin", dest, work)   # at learn
    >>> recorded_finetuned(registry, run, parent_dir, work)                       # at replay: (path, hash)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from retain.alphas import MODALITIES, Alpha, as_alpha

KIND = "extrapolated-merge"


def reference_alpha(alpha: Alpha) -> Alpha:
    """1 / alpha per modality; 1 (the merge itself, which is the parent there) where alpha is 0."""
    inv = {m: (1.0 / v if v else 1.0) if v is not None else None for m in MODALITIES for v in [alpha.for_modality(m)]}
    return Alpha(**inv)


def _reference(parent: Path, merged: Path, alpha: Alpha, preset: str, dest: Path) -> Path:
    from retain.merge import merge_checkpoints

    merge_checkpoints(parent, [merged], [reference_alpha(alpha)], None if alpha.is_uniform else preset, dest, progress=False,
                      extrapolate=True)
    return dest


def store_finetune(parent: str | os.PathLike, merged: str | os.PathLike, finetuned: str | os.PathLike, alpha: Alpha,
                   preset: str, dest: str | os.PathLike, work: str | os.PathLike):
    """Pack `finetuned` at `dest` against its extrapolation from `merged`; returns the PackReport."""
    from registry.pack import write_pack

    ref = _reference(Path(parent), Path(merged), alpha, preset, Path(work) / "finetune-reference")
    try:
        return write_pack(ref, finetuned, dest, metadata={"kind": KIND, "preset": preset, "alpha": str(alpha)})
    finally:
        shutil.rmtree(ref, ignore_errors=True)


def recorded_finetuned(registry, run, parent_dir: str | os.PathLike, work: str | os.PathLike) -> tuple[Path, str]:
    """A learn run's finetuned weights rebuilt bit for bit, and their hash. `parent_dir` holds the
    weights of the run's parent; the merge is the version the run committed (`run.result`)."""
    from registry import pack
    from registry.checkpoint import open_checkpoint
    from retain.delta import apply_delta

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    stored = registry.fetch_delta(run.id, work / "delta")
    with open_checkpoint(stored) as d:
        fmt = d.metadata.get("format")
        legacy_hash = d.metadata.get("finetuned_hash", "")
    if fmt != pack.FORMAT:
        return apply_delta(parent_dir, stored, work / "recorded-finetuned"), legacy_hash
    how = pack.pack_metadata(stored)
    merged = registry.checkout(run.result, work / "recorded-merge")
    ref = _reference(Path(parent_dir), merged, as_alpha(how["alpha"]), how["preset"], work / "finetune-reference")
    out = pack.unpack(ref, stored, work / "recorded-finetuned")
    shutil.rmtree(ref, ignore_errors=True)
    shutil.rmtree(merged, ignore_errors=True)
    return out, pack.pack_hashes(stored)[1]
