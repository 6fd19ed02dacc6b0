"""Behaviour-cloning finetune of a backbone on a demo set: task-FT or co-FT, alone or under DDP.

`task-ft` trains on the new skill's demos alone; `co-ft` fills a share `mix` of every batch
with pretraining frames (co-finetuning, the paper's other lever against forgetting). In either
mode a share `rehearse` may come from the demos of skills learned earlier (rehearsal, the plain
continual-learning answer to forgetting them). The recipe is a dataclass recorded with every
learn run so `replay` can run it again.

With `nproc > 1` the finetune runs under torchrun with DistributedDataParallel (gloo; the trainer
keeps batches on the CPU): every rank starts from the same parent weights, draws its own share of each
global batch (`batch_size // nproc` frames) with its own seeded generator, and DDP averages
the gradients, so all ranks hold the same weights after every step. Rank 0 writes the result.
The rank count is part of the recipe: it changes which frames are drawn and the float sums.

Example:
    >>> recipe = FinetuneRecipe(mode="co-ft", mix=0.2, steps=400, lr=3e-4, seed=0)
    >>> res = finetune("parent_dir", {"policy": "builtin-vla", "policy_config": {}}, demos, recipe,
    ...                "ft_dir", pretrain_frames=frames)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from registry.errors import invalid, unavailable
from retain.policies import policy_of

MODES = ("task-ft", "co-ft")
RECIPE_VERSION = 1  # bump when the finetune's arithmetic changes (old recipes no longer replay bit for bit)


@dataclasses.dataclass(frozen=True)
class FinetuneRecipe:
    """Everything that determines a finetune's weights besides the parent and the demos."""

    mode: str = "task-ft"
    """task-ft (the demos alone) or co-ft (mix in pretraining data)."""
    mix: Optional[float] = None
    """co-ft only: the share of each batch drawn from pretraining data, in [0, 1) (default 0.2 for
    co-ft, 0 for task-ft)."""
    steps: int = 300
    """Optimizer steps."""
    lr: float = 5e-4
    """Peak learning rate (AdamW, warm-up then cosine decay)."""
    batch_size: int = 32
    """Global batch size (split over ranks under DDP)."""
    seed: int = 0
    """Seeds batch sampling (rank r under DDP uses seed * 1000 + r)."""
    threads: int = 1
    """torch threads per process; recorded because it can change float rounding. One thread is
    robust on a busy machine and is where the recorded figures were measured."""
    nproc: int = 1
    """Processes (DDP ranks); 1 trains in this process."""
    pretrain_episodes: int = 200
    """co-ft only: episodes of pretraining data regenerated from the base's recorded recipe for the
    mix (task-ft ignores it)."""
    lr_scale: str = ""
    """Learning-rate multipliers by module, e.g. "vision=0.1" (empty: one rate for every weight)."""
    rehearse: float = 0.0
    """The share of each batch drawn from earlier skills' demos, in [0, 1) (0: none; recipes
    recorded before the option read as 0)."""
    device: str = "cpu"
    """The kind of device it trains on, cpu or cuda (recipes recorded before the option ran on the
    CPU): the arithmetic differs between them. Which GPU is torch's current one."""
    bf16: bool = False
    """bf16 autocast of the forward pass (cuda only)."""
    compile: bool = False
    """torch.compile of the forward (CUDA graphs on a GPU); recorded only when on, as it can change
    float rounding (recipes without it keep their bytes)."""

    def __post_init__(self) -> None:
        from retain.train import format_lr_scale, parse_lr_scale

        if self.mix is None:
            object.__setattr__(self, "mix", 0.2 if self.mode == "co-ft" else 0.0)
        object.__setattr__(self, "lr_scale", format_lr_scale(parse_lr_scale(self.lr_scale)))
        if self.mode not in MODES:
            raise invalid(f"unknown finetune mode {self.mode!r}; use {' or '.join(MODES)}")
        if not (0.0 <= self.mix <= 1.0):
            raise invalid(f"--mix {self.mix} is outside [0, 1]; it is the share of pretraining data per batch, e.g. 0.2")
        if self.mode == "co-ft" and self.mix >= 1.0:
            raise invalid("--mix 1 would leave no room for the new skill's demos; use a share below 1, e.g. 0.2")
        if not (0.0 <= self.rehearse < 1.0):
            raise invalid(f"--rehearse {self.rehearse} is outside [0, 1); it is the share of earlier skills' demos per batch, e.g. 0.2")
        if self.mixes and self.mix + self.rehearse >= 1.0:
            raise invalid(f"--mix {self.mix:g} and --rehearse {self.rehearse:g} leave no room for the new skill's demos; "
                          "keep their sum below 1, e.g. 0.2 each")
        if self.steps < 1:
            raise invalid(f"--steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise invalid(f"--lr must be positive, got {self.lr}")
        if self.nproc < 1:
            raise invalid(f"--nproc-per-node must be at least 1, got {self.nproc}")
        if self.threads < 1:
            raise invalid(f"--threads must be at least 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise invalid(f"a finetune's device is cpu or cuda, got {self.device!r}")
        if self.bf16 and self.device != "cuda":
            raise invalid("--bf16 autocast runs on a GPU only; drop --bf16 or use --device cuda")
        if self.nproc > 1 and self.compile:
            raise invalid("--compile trains in one process; drop --compile or use --nproc-per-node 1")
        if self.nproc > 1 and self.device != "cpu":
            raise invalid("--nproc-per-node runs DDP ranks on the CPU (gloo); on a GPU use --nproc-per-node 1")
        if self.batch_size < 1:
            raise invalid(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.batch_size < self.nproc:
            raise invalid(f"batch size {self.batch_size} is smaller than --nproc-per-node {self.nproc}; every rank needs a frame")

    @property
    def mixes(self) -> bool:
        return self.mode == "co-ft" and self.mix > 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.compile:
            del d["compile"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneRecipe":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    checkpoint: Path
    seconds: float
    first_loss: float
    final_loss: float
    warning: str = ""  # something went wrong after the weights were saved and checked


def finetune(
    parent: str | os.PathLike,
    config: Mapping[str, Any],
    demos: Any,
    recipe: FinetuneRecipe,
    dest: str | os.PathLike,
    pretrain_frames: Any = None,
    progress: bool = False,
    rehearsal_frames: Any = None,
) -> FinetuneResult:
    """Finetune the checkpoint `parent` (a version with `config`) on `demos`; write it to `dest`.

    Args:
        demos: demo frames (retain.frames.DemoFrames or the simulator's DemoData).
        pretrain_frames: co-ft's pretraining frames (required when recipe.mode is co-ft with mix > 0).
        rehearsal_frames: earlier skills' demo frames (required when recipe.rehearse > 0).
    """
    from retain.frames import frames_from

    frames = frames_from(demos)
    if len(frames) == 0:
        raise invalid("the demo set is empty (0 frames); collect or pass demos with at least one episode")
    if recipe.mixes and pretrain_frames is None:
        raise invalid("co-ft needs pretraining data to mix in; this base records none, so use --mode task-ft")
    rehearsal = frames_from(rehearsal_frames) if recipe.rehearse and rehearsal_frames is not None else None
    if recipe.rehearse and not rehearsal:
        raise invalid("--rehearse needs the demos of skills learned earlier, and there are none; drop --rehearse")
    mix = frames_from(pretrain_frames) if recipe.mixes else None
    if recipe.nproc > 1:
        _check_lr_scale(parent, recipe)  # here, not in the ranks, where it would read as a DDP failure
        return _finetune_ddp(parent, config, frames, recipe, Path(dest), mix, rehearsal, progress)
    adapter, policy_config = policy_of(config)
    model = adapter.load(parent, policy_config)
    report = _train(model, adapter, frames, recipe, mix, rehearsal, recipe.batch_size, recipe.seed, progress)
    adapter.save(model, dest)
    return FinetuneResult(Path(dest), report.seconds, report.first_loss, report.final_loss)


def _check_lr_scale(parent, recipe: FinetuneRecipe) -> None:
    from registry.checkpoint import open_checkpoint
    from retain.train import check_lr_scale, parse_lr_scale

    scales = parse_lr_scale(recipe.lr_scale)
    if scales:
        with open_checkpoint(parent) as ckpt:
            check_lr_scale(scales, ckpt.names)


def _train(model, adapter, frames, recipe: FinetuneRecipe, mix, rehearsal, batch_size: int, seed: int, progress: bool):
    from retain.device import resolve_device
    from retain.train import parse_lr_scale, train_bc

    # pretraining first, then rehearsal: a recipe without rehearsal draws exactly what it drew before
    shares = [(f, r) for f, r in ((mix, recipe.mix), (rehearsal, recipe.rehearse)) if f is not None]
    return train_bc(
        model, adapter, frames, recipe.steps, recipe.lr, batch_size, seed,
        mix=shares or None, threads=recipe.threads, progress=progress,
        lr_scale=parse_lr_scale(recipe.lr_scale), device=resolve_device(recipe.device), bf16=recipe.bf16,
        compile=recipe.compile,
    )


# ---------------------------------------------------------------------------------------- DDP


def _save_frames(frames, path: Path) -> None:
    # npz without pickle: the worker reads it back with allow_pickle=False.
    np.savez(
        path, images=frames.images, state=frames.state, action=frames.action,
        episode_index=frames.episode_index, task_index=frames.task_index, tasks=np.array(frames.tasks, dtype=np.str_),
    )


def _load_frames(path: Path):
    from retain.frames import DemoFrames

    with np.load(path, allow_pickle=False) as z:
        return DemoFrames(z["images"], z["state"], z["action"], z["episode_index"], z["task_index"], [str(t) for t in z["tasks"]])


def _finetune_ddp(parent, config, frames, recipe: FinetuneRecipe, dest: Path, mix, rehearsal, progress: bool) -> FinetuneResult:
    with tempfile.TemporaryDirectory(prefix="retain-ddp-") as tmp:
        work = Path(tmp)
        _save_frames(frames, work / "demos.npz")
        for part, name in ((mix, "mix.npz"), (rehearsal, "rehearse.npz")):
            if part is not None:
                _save_frames(part, work / name)
        spec = {"parent": str(parent), "config": dict(config), "recipe": recipe.to_dict(), "dest": str(dest), "work": str(work),
                "progress": progress}
        (work / "spec.json").write_text(json.dumps(spec))
        cmd = [
            # --standalone: the rendezvous store binds a port of its own choosing, so no other process
            # can take it between our picking a free port and torchrun binding it
            sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={recipe.nproc}", "--standalone",
            "-m", "retain.finetune", str(work / "spec.json"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(recipe.threads), "PYTHONPATH": child_pythonpath()}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True)
        try:
            out_text, err_text = proc.communicate()
        except BaseException:  # Ctrl-C or a kill of this process: torchrun stops its workers on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        result = work / "result.json"
        if not result.exists():
            detail = _last_error(err_text or out_text)
            raise unavailable(f"the distributed finetune ({recipe.nproc} processes) failed: {detail}; try --nproc-per-node 1")
        out = json.loads(result.read_text())
        if len(set(out["rank_hashes"])) != 1:
            raise unavailable(f"DDP ranks ended with different weights ({out['rank_hashes']}); the run is not usable")
        # rank 0 writes result.json (atomically) only after saving the weights and gathering every
        # rank's hash, so a rank that dies after that point cost nothing but its clean exit
        warning = "" if proc.returncode == 0 else (
            f"a DDP rank failed after the finetune was saved and checked ({_last_error(err_text or out_text)}); "
            "the weights are complete")
    return FinetuneResult(dest, out["seconds"], out["first_loss"], out["final_loss"], warning)


def child_pythonpath() -> str:
    """PYTHONPATH for a `python -m retain...` child: this checkout first, so it runs uninstalled too."""
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


# a Python exception line, or what a C++ or libc abort (SIGABRT) prints: "what():  <reason>",
# "terminate called without an active exception", "Fatal Python error: ...", "double free ..."
_EXCEPTION_LINE = re.compile(r"\b\w*(Error|Exception|Interrupt)\b(:|$)|\bwhat\(\):|^terminate called|"
                             r"^Fatal Python error|\bdouble free\b|\bcorrupted\b|\binvalid pointer\b")


def _last_error(text: Optional[str]) -> str:
    """The line that names why a torchrun job failed: the last exception a worker raised, with the
    exit code torchrun reports. torchrun's own summary ("error_file: <N/A>", ChildFailedError) ends
    the output but names nothing, so it is passed over."""
    lines = [" ".join(ln.split()) for ln in (text or "").splitlines() if ln.strip()]
    raised = [ln for ln in lines if _EXCEPTION_LINE.search(ln) and "ChildFailedError" not in ln and not ln.startswith("error_file")]
    code = next((ln for ln in reversed(lines) if ln.startswith("exitcode")), None)
    parts = [p for p in (raised[-1] if raised else None, code) if p]
    if parts:
        return "; ".join(parts)[:300]
    return lines[-1][:300] if lines else "no output"


def _ddp_module(model):
    """DDP wrapper that still exposes the wrapped model's attributes (cfg, tokenize, ...), so the
    adapter's loss and the trainer work on it unchanged while its forward syncs gradients."""
    from torch.nn.parallel import DistributedDataParallel

    class _Transparent(DistributedDataParallel):
        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    # Parameters a loss may leave out (the built-in VLA's pretraining-only locate head gets no
    # gradient from demos without targets) must not stall the gradient sync.
    return _Transparent(model, find_unused_parameters=True)


def _worker(spec_path: str) -> None:
    """One DDP rank (run by torchrun): train, check every rank agrees, rank 0 saves."""
    import hashlib

    import torch.distributed as dist

    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    recipe = FinetuneRecipe.from_dict(spec["recipe"])
    # gloo: the trainer and the adapters keep batches on the CPU, so a GPU backend (nccl) would
    # need device placement there first.
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        adapter, policy_config = policy_of(spec["config"])
        model = adapter.load(spec["parent"], policy_config)
        frames = _load_frames(work / "demos.npz")
        mix, rehearsal = (_load_frames(work / n) if (work / n).exists() else None for n in ("mix.npz", "rehearse.npz"))
        ddp = _ddp_module(model)
        report = _train(ddp, adapter, frames, recipe, mix, rehearsal, recipe.batch_size // world, recipe.seed * 1000 + rank,
                        spec["progress"] and rank == 0)
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        _fault_point("before-result", rank)
        hashes: list = [None] * world
        dist.all_gather_object(hashes, h.hexdigest())
        if rank == 0:
            adapter.save(model, spec["dest"])
            out = {"seconds": report.seconds, "first_loss": report.first_loss, "final_loss": report.final_loss, "rank_hashes": hashes}
            (work / "result.json.tmp").write_text(json.dumps(out))
            os.replace(work / "result.json.tmp", work / "result.json")
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # Every rank's work is done and checked (result.json is written). Leave without interpreter
    # teardown: gloo's threads and the process group's C++ state are torn down in no fixed order
    # there, and an abort at that point (SIGABRT, seen in CI) would fail a finetune that succeeded.
    _fault_point("after-result", rank)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _fault_point(where: str, rank: int) -> None:
    """Fault injection for the tests: RETAIN_DDP_ABORT=<where> makes the last rank abort there,
    as a C++ abort in gloo would (SIGABRT)."""
    if os.environ.get("RETAIN_DDP_ABORT") == where and rank == int(os.environ.get("WORLD_SIZE", "1")) - 1:
        os.abort()


if __name__ == "__main__":
    _worker(sys.argv[1])
