"""Pretraining the generalist: collect expert demos of every pretraining task, train by BC.

A `PretrainRecipe` holds everything that decides the weights (data scale, steps, seed, threads,
policy config); `pretrain(recipe)` replays it to the same bytes. The default base ships in
`retain/assets/` (weights + `base.json` with its recipe and weight hash) so users and the
`learn` loop need not spend the pretraining time; `python cli.py pretrain` with the recorded
recipe reproduces it.

Example:
    >>> recipe = PretrainRecipe.preset("tiny", seed=1)
    >>> result = pretrain(recipe, Path("out/base"))
    >>> result.weights_dir, result.report.final_loss
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from registry.errors import corrupt, invalid
from retain.train import DemoFrames, TrainReport

POLICY = "builtin-vla"
ASSETS = Path(__file__).parent / "assets"
SHIPPED_BASE = ASSETS / "base.safetensors"  # one file, so package-data "assets/*" ships it
SHIPPED_MANIFEST = ASSETS / "base.json"
RECIPE_VERSION = 2  # bump when pretraining code changes what a recipe produces

# Named sizes: `policy_config` overrides of the builtin VLA config plus the data/optimisation scale.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for tests and smoke runs
    "tiny": {
        "policy_config": {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
                          "vision_channels": 16, "vocab_size": 512, "chunk": 4, "execute": 2},
        "episodes": 24, "steps": 20, "lr": 1e-3, "batch_size": 16,
    },
    # the shipped default base: each setting is there because it made the base use its camera,
    # place, or pick a receptacle by name (the findings: docs/measurements.md, "The default base")
    "default": {
        "policy_config": {"image_size": 64, "max_words": 12, "vision_film": True, "locate_weight": 5.0,
                          "locate_heatmap": True, "locate_feeds_action": True},
        "episodes": 12000, "steps": 6000, "lr": 1e-3, "batch_size": 48, "threads": 2,
        "dagger_episodes": 3000, "dagger_steps": 1500, "dagger_roll_in": 0.6, "dagger_setting": "pretrain-clutter",
    },
}
# the default recipe with all-MiniLM-L6-v2 as the language backbone (frozen while pretraining; needs
# the minilm extra). max_words counts its word pieces, so the longest instruction fits whole
PRESETS["minilm"] = {**PRESETS["default"], "policy_config": {**PRESETS["default"]["policy_config"],
                                                              "language_backbone": "minilm", "max_words": 24}}


@dataclasses.dataclass
class PretrainRecipe:
    """Everything that determines a pretrained base's bytes."""

    config: str = "default"  # the preset the recipe started from (documentation only)
    policy: str = POLICY
    policy_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # full, resolved config
    episodes: int = 12000  # generalist expert episodes collected (spread over all pretraining tasks)
    steps: int = 6000
    lr: float = 1e-3
    batch_size: int = 48
    seed: int = 0  # seeds data collection, initialisation and batch order
    threads: int = 1  # torch threads: part of the recipe (it can change float rounding); the default
    # base uses 2 (fastest on an idle 2-core machine), 1 suits a machine shared with other jobs
    setting: str = "pretrain"  # simulator setting the demos come from
    noise: float = 0.1  # DART noise on executed expert actions while collecting (recorded actions stay clean)
    # DAgger stage (off at 0 episodes): roll the trained policy out, label its states with the
    # expert's chunks (retain/dagger.py), then train `dagger_steps` more with `dagger_share` of
    # each batch from those states and the rest from the expert demos
    dagger_episodes: int = 0
    dagger_steps: int = 0
    dagger_lr: float = 3e-4
    dagger_share: float = 0.5
    dagger_roll_in: float = 0.0  # the expert drives each rollout's first U[0, this) of its steps
    dagger_setting: str = ""  # the setting the stage rolls out in ("": the demos' `setting`)
    device: str = "cpu"  # the kind of device it trains on (cpu or cuda): the arithmetic differs between them
    bf16: bool = False  # bf16 autocast of the forward pass (cuda only)
    recipe_version: int = RECIPE_VERSION
    compile: bool = False  # torch.compile of the forward (it can change float rounding); recorded only when on

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise invalid(f"--episodes must be at least 1, got {self.episodes}")
        if self.steps < 1:
            raise invalid(f"--steps must be at least 1, got {self.steps}")
        if self.seed < 0:
            raise invalid(f"--seed must be >= 0, got {self.seed}")
        if self.threads < 1:
            raise invalid(f"threads must be at least 1, got {self.threads}")
        if min(self.dagger_episodes, self.dagger_steps) < 0 or (self.dagger_episodes > 0) != (self.dagger_steps > 0):
            raise invalid(f"--dagger-episodes ({self.dagger_episodes}) and --dagger-steps ({self.dagger_steps}) "
                          "go together: both positive for a DAgger stage, both 0 for none")
        if not 0.0 < self.dagger_share < 1.0 or self.dagger_lr <= 0:
            raise invalid(f"dagger_share must be in (0, 1) and dagger_lr positive, got {self.dagger_share} and {self.dagger_lr}")
        if not 0.0 <= self.dagger_roll_in < 1.0:
            raise invalid(f"--dagger-roll-in must be in [0, 1) (the share of a rollout the expert may drive first), got {self.dagger_roll_in}")
        if self.device not in ("cpu", "cuda"):
            raise invalid(f"a pretrain recipe's device is cpu or cuda, got {self.device!r}")
        if self.bf16 and self.device != "cuda":
            raise invalid("--bf16 autocast runs on a GPU only; drop --bf16 or use --device cuda")
        from retain.sim.settings import get_setting

        for name in (self.setting, self.dagger_setting or self.setting):
            get_setting(name)  # an unknown name fails here, not after collecting or a first stage's training

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PretrainRecipe":
        """The recipe of a named preset (see PRESETS: "tiny", "default", "minilm"), with overrides (None means keep)."""
        from retain import sim
        from retain.policies import get_policy

        if name not in PRESETS:
            raise invalid(f"unknown pretrain config {name!r}; use one of {', '.join(PRESETS)}")
        p = dict(PRESETS[name])
        base_cfg = {"image_size": sim.IMAGE_SIZE, "state_dim": sim.STATE_DIM, "action_dim": sim.ACTION_DIM}
        cfg = get_policy(POLICY).config({**base_cfg, **p.pop("policy_config")}).to_dict()
        p.update({k: v for k, v in overrides.items() if v is not None})
        return cls(config=name, policy_config=cfg, **p)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainRecipe":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.compile:  # recipes made before the option keep their bytes
            del d["compile"]
        return d


@dataclasses.dataclass
class PretrainResult:
    weights_dir: Path
    recipe: PretrainRecipe
    report: TrainReport
    frames: int
    collect_seconds: float


def collect_frames(tasks: list[str], setting: str, episodes: int, seed: int, noise: float = 0.0,
                   image_size: int | None = None) -> DemoFrames:
    """`episodes` successful expert episodes cycling over `tasks` (the simulator's collector), as
    training frames. `noise` perturbs the executed actions but not the recorded ones (DART), so
    the demos show recoveries from the small mistakes a cloned policy makes. `image_size` renders
    for a policy that sees another size than the simulator's default (None: the default)."""
    from retain.sim.demos import collect_episodes
    from retain.train import frames_from_episodes

    return frames_from_episodes(collect_episodes(list(tasks), episodes, setting, seed, noise=noise, image_size=image_size))


def pretrain(recipe: PretrainRecipe, dest: Path, progress: bool = False, *, device: str | None = None,
             run_dir: Path | None = None, checkpoint_minutes: float = 10.0, checkpoint_steps: int | None = None) -> PretrainResult:
    """Collect generalist demos, train the policy from scratch, save it to the new folder `dest`.

    Args:
        device: where to train ("cpu", "cuda", "cuda:N"), of the recipe's device kind (None: the
            recipe's, on its first GPU).
        run_dir: a new (or empty) folder to checkpoint into every `checkpoint_minutes` (or every
            `checkpoint_steps` steps); `resume_pretrain(run_dir)` continues the run from there.
    """
    from registry.errors import already_exists, not_found
    from retain.pretrain_run import start_run

    # refused now, not after the training: a missing folder once cost a 50-minute run its weights
    if Path(dest).exists():
        raise already_exists(f"output {dest} already exists; choose a new path or remove it first")
    if not Path(dest).parent.is_dir():
        raise not_found(f"output folder {Path(dest).parent} does not exist; create it first")
    actual = _device_for(recipe, device)
    run = start_run(run_dir, recipe, checkpoint_minutes, checkpoint_steps) if run_dir is not None else None
    return _pretrain(recipe, Path(dest), progress, actual, run)


def resume_pretrain(run_dir: Path, dest: Path | None = None, progress: bool = False, *, device: str | None = None,
                    checkpoint_minutes: float | None = None, checkpoint_steps: int | None = None, **options: Any) -> PretrainResult:
    """Continue the pretraining run in `run_dir` from its last checkpoint; bit for bit the weights an
    uninterrupted run gives (on the CPU). `options` are recipe fields the caller states (e.g.
    steps=6000, config="default"); any that differ from the recorded recipe are refused by name.
    The weights go to `dest` (None: the run's own `final` folder, kept for a later commit)."""
    from retain.pretrain_run import open_run

    if dest is not None and Path(dest).exists():
        raise invalid(f"output {dest} already exists; choose a new path or remove it first")
    run = open_run(run_dir, options, device, checkpoint_minutes, checkpoint_steps)
    actual = _device_for(run.recipe, device)
    if progress:
        at = run.checkpoint()
        where = f"step {at[0].step} of its {'DAgger' if at[1] == 'dagger' else 'cloning'} stage" if at else "its start"
        print(f"resuming the run in {run_dir} from {where} (demos are collected again from the recipe's seed)", file=sys.stderr)
    return _pretrain(run.recipe, Path(dest) if dest is not None else None, progress, actual, run)


def _device_for(recipe: PretrainRecipe, device: str | None) -> str:
    from retain.device import device_kind, resolve_device

    actual = resolve_device(device or recipe.device)
    if device_kind(actual) != recipe.device:
        raise invalid(f"--device {device} is not the recipe's device ({recipe.device}); train on a {recipe.device} device")
    return actual


def _pretrain(recipe: PretrainRecipe, dest: Path | None, progress: bool, device: str, run) -> PretrainResult:
    from retain import sim
    from retain.policies import get_policy
    from retain.train import deterministic_torch, train_bc

    adapter = get_policy(recipe.policy)
    if run is not None and run.finished():
        return run.result(dest)
    t0 = time.perf_counter()
    data = collect_frames(list(sim.PRETRAIN_TASKS), recipe.setting, recipe.episodes, recipe.seed, recipe.noise,
                          recipe.policy_config.get("image_size"))
    collect_s = time.perf_counter() - t0
    if len(data) == 0:
        raise invalid("the experts produced no successful pretraining episode; check the simulator")
    resume = run.checkpoint() if run is not None else None  # (state, stage) or None
    first = run.first_stage() if run is not None else None
    if first is not None:  # the cloning stage finished before the interruption
        model, report = adapter.load(first[0], recipe.policy_config), first[1]
        freeze_pretrained_text(model)
    else:
        with deterministic_torch(recipe.threads):
            model = adapter.build(recipe.policy_config, seed=recipe.seed)
        freeze_pretrained_text(model)
        report = train_bc(model, adapter, data, recipe.steps, recipe.lr, recipe.batch_size, recipe.seed,
                          threads=recipe.threads, progress=progress, targets=True, device=device, bf16=recipe.bf16, compile=recipe.compile,
                          resume=resume[0] if resume and resume[1] == "bc" else None,
                          checkpoint=run.hook("bc") if run is not None else None)
        if run is not None and recipe.dagger_episodes:
            run.save_first_stage(model, adapter, report)
    frames = len(data)
    if recipe.dagger_episodes:
        visited, relabel_s, second = dagger_stage(model, adapter, data, recipe, recipe.dagger_episodes, recipe.dagger_steps,
                                                  recipe.dagger_lr, recipe.dagger_share, recipe.threads, progress, device=device,
                                                  resume=resume[0] if resume and resume[1] == "dagger" else None,
                                                  checkpoint=run.hook("dagger") if run is not None else None)
        collect_s += relabel_s
        report = TrainReport(report.steps + second.steps, report.seconds + second.seconds, report.first_loss,
                             second.final_loss, report.losses + second.losses)
        frames += len(visited)
    result = PretrainResult(Path(dest) if dest is not None else Path(), recipe, report, frames, collect_s)
    if run is not None:
        return run.finish(model, adapter, result, dest)
    adapter.save(model, dest)
    return result


def freeze_pretrained_text(model) -> None:
    """Keep a pretrained text encoder (language_backbone "minilm") as it was shipped through
    pretraining, so the generality it brings survives; `learn` finetunes every weight, it included."""
    text = getattr(getattr(model, "language", None), "text", None)
    for p in text.parameters() if text is not None else ():
        p.requires_grad_(False)


def dagger_stage(model, adapter, demos: DemoFrames, recipe: PretrainRecipe, episodes: int, steps: int, lr: float,
                 share: float, threads: int, progress: bool = False, *, device: str = "cpu", resume=None,
                 checkpoint=None) -> tuple[Any, float, TrainReport]:
    """Pretraining's DAgger stage on a trained `model`, in place: roll it out on the pretraining tasks
    for `episodes`, have the expert relabel every state it visits, then train `steps` more on `demos`
    with `share` of each batch from the relabelled states. Seeds and batch size come from `recipe`.
    Returns (relabelled frames, seconds spent rolling out and relabelling, the training report)."""
    from retain.train import train_bc

    visited, relabel_s = dagger_relabel(model, adapter, recipe, episodes, threads)
    report = train_bc(model, adapter, demos, steps, lr, recipe.batch_size, recipe.seed + 1, mix=(visited, share),
                      threads=threads, progress=progress, targets=True, device=device, bf16=recipe.bf16, compile=recipe.compile,
                      resume=resume, checkpoint=checkpoint)
    return visited, relabel_s, report


def dagger_relabel(model, adapter, recipe: PretrainRecipe, episodes: int, threads: int) -> tuple[Any, float]:
    """The DAgger stage's data: `episodes` rollouts of `model` on the pretraining tasks, every visited
    state relabelled by the expert; with the seconds it took."""
    from retain import sim
    from retain.dagger import relabelled_frames
    from retain.train import deterministic_torch

    t0 = time.perf_counter()
    with deterministic_torch(threads):
        visited = relabelled_frames(model, adapter, list(sim.PRETRAIN_TASKS), recipe.dagger_setting or recipe.setting,
                                    episodes, seed=recipe.seed + 1,
                                    roll_in=recipe.dagger_roll_in)
    return visited, time.perf_counter() - t0


def version_config(recipe: PretrainRecipe) -> dict[str, Any]:
    """The `config` a registry version stores: what rebuilds the model."""
    return {"policy": recipe.policy, "policy_config": recipe.policy_config}


@dataclasses.dataclass
class ShippedBase:
    weights_dir: Path
    config: dict[str, Any]  # {"policy": ..., "policy_config": ...}
    recipe: PretrainRecipe
    weight_hash: str
    metrics: dict[str, Any]


def _shipped_manifest() -> dict[str, Any]:
    """The shipped base's recorded config, recipe and hash; a missing or damaged file is one clear error."""
    try:
        manifest = json.loads(SHIPPED_MANIFEST.read_text())
        complete = {"recipe", "weight_hash"} <= manifest.keys() and isinstance(manifest["config"]["policy_config"]["image_size"], int)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        complete = False
    if not complete:
        raise corrupt(f"the shipped base's manifest {SHIPPED_MANIFEST} is missing or damaged; reinstall the package")
    return manifest


def shipped_base() -> ShippedBase:
    """The default base that ships in retain/assets, checked against its recorded hash."""
    from registry.checkpoint import open_checkpoint, weight_hash

    if not SHIPPED_BASE.exists():
        raise corrupt(f"the shipped base is missing from {ASSETS}; reinstall the package or run `retain pretrain`")
    manifest = _shipped_manifest()
    with open_checkpoint(SHIPPED_BASE) as ckpt:
        actual = weight_hash(ckpt)
    if actual != manifest["weight_hash"]:
        raise corrupt(f"the shipped base in {SHIPPED_BASE} has hash {actual}, not the recorded {manifest['weight_hash']}; reinstall the package")
    return ShippedBase(SHIPPED_BASE, manifest["config"], PretrainRecipe.from_dict(manifest["recipe"]), actual, manifest.get("metrics", {}))


def check_note(recorded_runtime: dict[str, Any] | None) -> str:
    """Why a retrained base can differ from the shipped one: the runtimes' differences, or that the
    shipped base records none (bases shipped before runtimes were recorded)."""
    from retain.provenance import runtime, runtime_changes

    if not recorded_runtime:
        return (f"the shipped base records no runtime, so what differs cannot be named; this is {runtime()}. The same recipe "
                "gives other bytes under another torch, numpy, CPU instruction set (ATEN_CPU_CAPABILITY) or CPU model")
    changes = runtime_changes(recorded_runtime)
    return f"runtime since the shipped base was made: {changes}" if changes else "same runtime as the shipped base's: the recipe or code changed"


def shipped_image_size() -> int:
    """The image side the shipped default base sees: what demos are collected at unless told otherwise."""
    return int(_shipped_manifest()["config"]["policy_config"]["image_size"])


def write_shipped_base(result: PretrainResult, metrics: dict[str, Any] | None = None) -> Path:
    """Replace retain/assets/base with `result`'s weights and record recipe, config and hash."""
    import shutil

    from registry.checkpoint import open_checkpoint, resolve_files, weight_hash

    with open_checkpoint(result.weights_dir) as ckpt:
        digest = weight_hash(ckpt)
    ASSETS.mkdir(exist_ok=True)
    (src,) = resolve_files(result.weights_dir)
    shutil.copyfile(src, SHIPPED_BASE)
    SHIPPED_BASE.chmod(0o644)
    from retain.provenance import runtime

    manifest = {
        "config": version_config(result.recipe),
        "recipe": result.recipe.to_dict(),
        "runtime": runtime(result.recipe.device),  # the bytes depend on it too: a --check elsewhere can say what differs
        "weight_hash": digest,
        "metrics": {"frames": result.frames, "final_loss": result.report.final_loss,
                    "train_seconds": round(result.report.seconds, 1), "collect_seconds": round(result.collect_seconds, 1),
                    **(metrics or {})},
    }
    SHIPPED_MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return SHIPPED_BASE


def _main(argv: list[str] | None = None) -> int:
    """python -m retain.pretrain [--check]: regenerate the shipped base, or reproduce it and compare."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(
        prog="python -m retain.pretrain",
        description="Retrain the shipped default base from its recorded recipe (about 21 minutes on 2 cores) "
        "and overwrite retain/assets/base.{safetensors,json}; with --check, reproduce it and compare hashes "
        "without writing anything.")
    ap.add_argument("--check", action="store_true", help="reproduce the shipped base and report MATCH or DIFFERENT; writes nothing")
    args = ap.parse_args(argv)  # anything else (a typo of --check) stops here, before 21 minutes of training
    with tempfile.TemporaryDirectory() as tmp:
        res = pretrain(PretrainRecipe.preset("default"), Path(tmp) / "base", progress=True)
        if args.check:
            from registry.checkpoint import open_checkpoint, weight_hash

            with open_checkpoint(res.weights_dir) as ckpt:
                got = weight_hash(ckpt)
            shipped = shipped_base().weight_hash  # hashes the shipped file: once
            print(f"reproduced {got}; shipped {shipped}; {'MATCH' if got == shipped else 'DIFFERENT'}")
            if got != shipped:
                print(check_note(_shipped_manifest().get("runtime")))
        else:
            print(f"wrote {write_shipped_base(res)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
