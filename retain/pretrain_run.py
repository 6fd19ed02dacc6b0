"""A pretraining run's folder: what lets a long run stop at any moment and continue.

    run.json              what the run is: its recipe, checkpoint interval, code and runtime at the start
    checkpoint.json       names the current checkpoint (retain/train_state.py writes both atomically)
    ckpt-<stage>-<step>/  the checkpoint: weights, optimizer and generator state, step, loss log
    stage-<stage>/ .json  a finished stage's weights and the run's report so far, for each stage
                          another follows (cloning, the DAgger stage, each continuation)
    final/ result.json    the finished weights and report; `version` in run.json once committed

The demos are not stored: collecting them again from the recipe's seed gives the same frames (as
does rolling out a finished stage's weights again for the DAgger stage after it), in a minute
against hours of training.

Example:
    >>> pretrain(recipe, dest, run_dir=Path("runs/big"))       # killed at some point ...
    >>> resume_pretrain(Path("runs/big"), dest)                # ... continues from the last checkpoint
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Optional

from registry.errors import already_exists, corrupt, invalid, invalid_state, not_found
from retain.pretrain_recipe import RECIPE_VERSION, PretrainRecipe, PretrainResult
from retain.train import TrainReport
from retain.train_state import Schedule, TrainState, clear_partials, read_checkpoint, write_checkpoint, write_json_atomic

RUN_FILE = "run.json"
KIND = "retain pretrain run"
FORMAT = 2  # 2: a folder per finished stage (1 kept the cloning stage's only)


def _check_interval(minutes: float, steps: Optional[int]) -> None:
    if not minutes > 0:
        raise invalid(f"--checkpoint-minutes must be positive, got {minutes}")
    if steps is not None and steps < 1:
        raise invalid(f"--checkpoint-steps must be at least 1, got {steps}")


def start_run(path: Path, recipe: PretrainRecipe, minutes: float = 10.0, steps: Optional[int] = None) -> "PretrainRun":
    """Make `path` (new, or an empty folder) the folder of a run of `recipe`."""
    from retain.provenance import code_version, runtime

    path = Path(path)
    _check_interval(minutes, steps)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        hint = "continue it with --resume" if (path / RUN_FILE).exists() else "choose a new folder"
        raise already_exists(f"run folder {path} already exists and is not empty; {hint}")
    if not path.parent.exists():
        raise not_found(f"folder {path.parent} does not exist; create it first")
    path.mkdir(exist_ok=True)
    run = PretrainRun(path, recipe, minutes, steps, {"code_version": code_version(), "runtime": runtime()})
    write_json_atomic(path / RUN_FILE, run.record())
    return run


def open_run(path: Path, options: dict[str, Any], device: Optional[str], minutes: Optional[float],
             steps: Optional[int]) -> "PretrainRun":
    """The run in `path`, checked: a pretrain run of this code's recipe version, with a readable
    checkpoint, and stated `options` (recipe fields; None: not stated) equal to the recorded ones."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise not_found(f"{path} is not a pretraining run (no {RUN_FILE}); start one with retain pretrain --run-dir {path}")
    try:
        record = json.loads((path / RUN_FILE).read_text())
        kind, fmt = record.get("kind"), record.get("format")
    except (ValueError, OSError, AttributeError):
        raise corrupt(f"{path / RUN_FILE} is damaged; this run cannot be resumed, start it again in a new folder")
    if kind != KIND or fmt != FORMAT:
        raise invalid(f"{path} holds a {kind or 'unknown'} (format {fmt}), not a {KIND} of format {FORMAT}; it cannot be resumed here")
    if record["recipe"].get("recipe_version") != RECIPE_VERSION:
        raise invalid(f"the run in {path} was made with pretrain recipe version {record['recipe'].get('recipe_version')} "
                      f"and this code makes version {RECIPE_VERSION}; finish it with the code that started it, or start again")
    try:
        recipe = PretrainRecipe.from_dict(record["recipe"])
    except TypeError as e:
        raise invalid(f"the run in {path} records a recipe this code does not know ({e}); finish it with the code that started it")
    if record.get("version"):
        raise invalid_state(f"the run in {path} already finished and was committed as {record['version']}; nothing to resume")
    stated = dict(options)
    if device is not None:
        from retain.device import device_kind, resolve_device

        stated["device"] = device_kind(resolve_device(device))
    differ = [f"{k} (recorded {getattr(recipe, k)!r}, given {v!r})" for k, v in stated.items()
              if v is not None and getattr(recipe, k) != v]
    if differ:
        raise invalid(f"--resume {path}: options differ from the run's recorded ones: {', '.join(differ)}; "
                      "drop them (the run continues with its own) or start a new run")
    minutes = record["checkpoint_minutes"] if minutes is None else minutes
    steps = record.get("checkpoint_steps") if steps is None else steps
    _check_interval(minutes, steps)
    run = PretrainRun(path, recipe, minutes, steps, record.get("started", {}))
    clear_partials(path)
    run.checkpoint()  # a damaged checkpoint stops here, before a minute of collecting demos
    return run


@dataclasses.dataclass
class PretrainRun:
    path: Path
    recipe: PretrainRecipe
    minutes: float
    steps: Optional[int]
    started: dict[str, Any]  # code_version and runtime at the start
    _checkpoint: Any = dataclasses.field(default=None, repr=False)

    def record(self, **extra: Any) -> dict[str, Any]:
        return {"kind": KIND, "format": FORMAT, "recipe": self.recipe.to_dict(), "checkpoint_minutes": self.minutes,
                "checkpoint_steps": self.steps, "started": self.started, **extra}

    def checkpoint(self) -> Optional[tuple[TrainState, str]]:
        """(state, stage) of the last checkpoint, or None before the first."""
        if self._checkpoint is None:
            found = read_checkpoint(self.path)
            self._checkpoint = (found[0], found[1].get("stage", "bc")) if found else False
        return self._checkpoint or None

    def hook(self, stage: str) -> "_Hook":
        return _Hook(self, stage, Schedule(self.minutes, self.steps))

    # each finished stage that another follows, kept whole so a resume starts after it
    def last_stage(self) -> Optional[tuple[str, Path, dict[str, Any]]]:
        """(stage, its weights, the run's report so far) of the latest finished stage, or None."""
        for stage in reversed(self.recipe.stages()[:-1]):
            if (self.path / f"stage-{stage}").is_dir():
                return stage, self.path / f"stage-{stage}", json.loads((self.path / f"stage-{stage}.json").read_text())
        return None

    def save_stage(self, stage: str, model, adapter, record: dict[str, Any]) -> None:
        write_json_atomic(self.path / f"stage-{stage}.json", record)  # before the folder: its presence means done
        if (self.path / f"stage-{stage}").exists():
            shutil.rmtree(self.path / f"stage-{stage}")
        adapter.save(model, self.path / f"stage-{stage}")

    # the end
    def finished(self) -> bool:
        return (self.path / "final").is_dir() and (self.path / "result.json").is_file()

    def finish(self, model, adapter, result: PretrainResult, dest: Optional[Path]) -> PretrainResult:
        write_json_atomic(self.path / "result.json", {"report": dataclasses.asdict(result.report), "frames": result.frames,
                                                     "collect_seconds": result.collect_seconds})
        if (self.path / "final").exists():
            shutil.rmtree(self.path / "final")
        adapter.save(model, self.path / "final")
        return self.result(dest)

    def result(self, dest: Optional[Path]) -> PretrainResult:
        """The finished run's result; its weights copied to `dest` when one is given."""
        done = json.loads((self.path / "result.json").read_text())
        weights = self.path / "final"
        if dest is not None:
            if Path(dest).exists():
                raise already_exists(f"output {dest} already exists; choose a new path or remove it first")
            shutil.copytree(weights, dest)
            weights = Path(dest)
        return PretrainResult(weights, self.recipe, TrainReport(**done["report"]), done["frames"], done["collect_seconds"])


def mark_committed(path: Path, version: str) -> None:
    """Record in the run's folder the registry version it became: a later --resume says it is done."""
    record = json.loads((Path(path) / RUN_FILE).read_text())
    write_json_atomic(Path(path) / RUN_FILE, {**record, "version": version})


class _Hook:
    """train_bc's checkpoint hook for one stage of a run."""

    def __init__(self, run: PretrainRun, stage: str, schedule: Schedule):
        self.run, self.stage, self.schedule = run, stage, schedule

    def due(self, steps_done: int) -> bool:
        return self.schedule.due(steps_done)

    def save(self, state: TrainState) -> None:
        write_checkpoint(self.run.path, state, {"stage": self.stage})
        self.schedule.saved()
