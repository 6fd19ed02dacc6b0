"""Checkpoints of a training run that resume bit for bit, written so a kill never leaves half of one.

A checkpoint is a folder:
    model.safetensors   the weights (a policy checkpoint: `adapter.load` reads it as it is)
    state.safetensors   the optimizer's state tensors ("optimizer.<param index>.<name>") and the
                        batch generator's state ("generator"): the data cursor
    state.json          the step, the loss log so far, the seconds spent, and the caller's notes
No pickle anywhere: tensors go to safetensors, the rest to JSON.

Writing is atomic: the folder is written under a temporary name and fsynced, renamed, and only
then does the run's pointer file `checkpoint.json` (replaced atomically, with the sha256 of every
file) name it; the previous checkpoint is removed after that. A kill at any moment leaves the
pointer naming a complete checkpoint (or none), and `read_checkpoint` checks the hashes, so a
damaged one is one clear error rather than a silently wrong resume.

Example:
    >>> state = capture(model, opt, gen.get_state(), step=120, log={...})
    >>> write_checkpoint(run_dir, state, notes={"stage": "bc"})
    >>> state, notes = read_checkpoint(run_dir)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from registry.errors import corrupt

POINTER = "checkpoint.json"
FILES = ("model.safetensors", "state.safetensors", "state.json")
PAUSE_ENV = "RETAIN_FAULT_PAUSE_IN_CHECKPOINT"  # tests: seconds to sleep with a checkpoint half-written


@dataclasses.dataclass
class TrainState:
    """Everything a training loop needs to continue as if it had never stopped (tensors on the CPU)."""

    step: int  # optimizer steps done
    model: dict[str, Any]  # state_dict
    optimizer: dict[str, Any]  # "<param index>.<name>" -> tensor
    generator: Any  # the batch generator's state (uint8 tensor) after the last step's draw
    log: dict[str, Any]  # JSON: first_loss, losses, window, tail, seconds


def capture(model, opt, generator_state, step: int, log: dict[str, Any]) -> TrainState:
    """A CPU copy of the run's state after `step` steps."""
    model_t = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    optim = {}
    for index, entry in opt.state_dict()["state"].items():
        for name, value in entry.items():
            optim[f"{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
    return TrainState(step, model_t, optim, generator_state.clone(), json.loads(json.dumps(log)))


def restore(state: TrainState, model, opt, generator) -> None:
    """Load `state` into a freshly built model, optimizer and generator (in place)."""
    model.load_state_dict(state.model)
    entries: dict[int, dict[str, Any]] = {}
    for key, value in state.optimizer.items():
        index, _, name = key.partition(".")
        entries.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": entries, "param_groups": opt.state_dict()["param_groups"]})
    generator.set_state(state.generator)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_file(path)
    except OSError:  # some filesystems cannot fsync a directory; the renames are still atomic
        pass


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_checkpoint(run_dir: Path, state: TrainState, notes: Optional[dict[str, Any]] = None) -> Path:
    """Write `state` as the run's new checkpoint, atomically; returns its folder."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    name = f"ckpt-{(notes or {}).get('stage', 'train')}-{state.step:09d}"
    final = run_dir / name
    tmp = run_dir / f".{name}.partial"
    for stale in (tmp, final):  # a leftover of a killed write of this very step
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir()
    save_file(state.model, str(tmp / FILES[0]), metadata={"format": "pt"})
    save_file({**{f"optimizer.{k}": v for k, v in state.optimizer.items()}, "generator": state.generator},
              str(tmp / FILES[1]), metadata={"format": "pt"})
    (tmp / FILES[2]).write_text(json.dumps({"step": state.step, "log": state.log, "notes": notes or {}}, indent=1) + "\n")
    digests = {}
    for f in FILES:
        _fsync_file(tmp / f)
        digests[f] = _sha256(tmp / f)
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if pause:
        time.sleep(pause)  # fault injection: a kill now must leave the previous checkpoint in force
    os.rename(tmp, final)
    _fsync_dir(run_dir)
    previous = _pointer(run_dir)
    write_json_atomic(run_dir / POINTER, {"name": name, "step": state.step, "notes": notes or {}, "sha256": digests,
                                          "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if previous and previous.get("name") not in (None, name):
        shutil.rmtree(run_dir / previous["name"], ignore_errors=True)
    return final


def _pointer(run_dir: Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / POINTER
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("name"), str) or not isinstance(data.get("sha256"), dict):
            raise ValueError
        return data
    except (ValueError, OSError):
        raise corrupt(f"the checkpoint pointer {path} is damaged; this run cannot be resumed, start it again in a new folder")


def read_checkpoint(run_dir: Path) -> Optional[tuple[TrainState, dict[str, Any]]]:
    """(state, notes) of the run's checkpoint, checked against its recorded hashes; None if it has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pointer = _pointer(run_dir)
    if pointer is None:
        return None
    folder = Path(run_dir) / pointer["name"]
    for f in FILES:
        path = folder / f
        if not path.is_file() or _sha256(path) != pointer["sha256"].get(f):
            raise corrupt(f"checkpoint {folder} is damaged ({f} is missing or does not match its recorded hash); "
                          "this run cannot be resumed from it, start it again in a new folder")
    try:
        model = load_file(str(folder / FILES[0]))
        rest = load_file(str(folder / FILES[1]))
        meta = json.loads((folder / FILES[2]).read_text())
    except (SafetensorError, OSError, ValueError) as e:
        raise corrupt(f"checkpoint {folder} cannot be read ({e}); start the run again in a new folder")
    optim = {k.removeprefix("optimizer."): v for k, v in rest.items() if k.startswith("optimizer.")}
    state = TrainState(int(meta["step"]), model, optim, rest["generator"], meta["log"])
    return state, meta.get("notes", {})


def clear_partials(run_dir: Path) -> None:
    """Remove what killed writes left behind: temporary folders and checkpoints no pointer names."""
    pointer = _pointer(run_dir)
    keep = pointer["name"] if pointer else None
    for p in Path(run_dir).iterdir():
        if p.is_dir() and (p.name.endswith(".partial") or (p.name.startswith("ckpt-") and p.name != keep)):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


class Schedule:
    """When to checkpoint: every `minutes` of wall time (default 10), or every `steps` steps when set."""

    def __init__(self, minutes: float = 10.0, steps: Optional[int] = None):
        self.minutes, self.steps = minutes, steps
        self.last = time.monotonic()

    def due(self, steps_done: int) -> bool:
        if self.steps:
            return steps_done % self.steps == 0
        return time.monotonic() - self.last >= self.minutes * 60

    def saved(self) -> None:
        self.last = time.monotonic()
