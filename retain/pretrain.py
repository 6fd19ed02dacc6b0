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
from retain.frames import DemoFrames
from retain.pretrain_recipe import Continuation, PretrainRecipe, PretrainResult
from retain.train import TrainReport

ASSETS = Path(__file__).parent / "assets"
SHIPPED_BASE = ASSETS / "base.safetensors"  # one file, so package-data "assets/*" ships it
SHIPPED_MANIFEST = ASSETS / "base.json"
def collect_frames(tasks: list[str], setting: str, episodes: int, seed: int, noise: float = 0.0,
                   image_size: int | None = None) -> DemoFrames:
    """`episodes` successful expert episodes cycling over `tasks` (the simulator's collector), as
    training frames. `noise` perturbs the executed actions but not the recorded ones (DART), so
    the demos show recoveries from the small mistakes a cloned policy makes. `image_size` renders
    for a policy that sees another size than the simulator's default (None: the default)."""
    from retain.frames import frames_from_episodes
    from retain.sim.demos import collect_episodes

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
        where = f"step {at[0].step} of its { {'bc': 'cloning', 'dagger': 'DAgger'}.get(at[1], at[1])} stage" if at else "its start"
        print(f"resuming the run in {run_dir} from {where} (demos are collected again from the recipe's seed)", file=sys.stderr)
    return _pretrain(run.recipe, Path(dest) if dest is not None else None, progress, actual, run)


def _device_for(recipe: PretrainRecipe, device: str | None) -> str:
    from retain.device import device_kind, resolve_device

    actual = resolve_device(device or recipe.device)
    if device_kind(actual) != recipe.device:
        raise invalid(f"--device {device} is not the recipe's device ({recipe.device}); train on a {recipe.device} device")
    return actual


def _pretrain(recipe: PretrainRecipe, dest: Path | None, progress: bool, device: str, run) -> PretrainResult:
    from retain.policies import get_policy
    from retain.train import deterministic_torch

    adapter = get_policy(recipe.policy)
    if run is not None and run.finished():
        return run.result(dest)
    stages = recipe.stages()
    resume = run.checkpoint() if run is not None else None  # (state, stage) or None
    done = run.last_stage() if run is not None else None
    if done is not None:  # the stages up to this one finished before the interruption
        name, weights, record = done
        model = adapter.load(weights, recipe.policy_config)
        report, frames, collect_s = TrainReport(**record["report"]), record["frames"], record["collect_seconds"]
        todo = stages[stages.index(name) + 1:]
    else:
        with deterministic_torch(recipe.threads):
            model = adapter.build(recipe.policy_config, seed=recipe.seed)
        report, frames, collect_s, todo = None, 0, 0.0, stages
    freeze_pretrained_text(model)
    demos = _Demos(recipe)
    for stage in todo:
        at = dict(resume=resume[0] if resume and resume[1] == stage else None,
                  checkpoint=run.hook(stage) if run is not None else None)
        part, added, seconds = _run_stage(stage, model, adapter, recipe, demos, progress, device, **at)
        report = part if report is None else TrainReport(report.steps + part.steps, report.seconds + part.seconds,
                                                         report.first_loss, part.final_loss, report.losses + part.losses)
        frames, collect_s = frames + added, collect_s + seconds
        if run is not None and stage != stages[-1]:
            run.save_stage(stage, model, adapter, {"report": dataclasses.asdict(report), "frames": frames,
                                                   "collect_seconds": collect_s})
    result = PretrainResult(Path(dest) if dest is not None else Path(), recipe, report, frames, collect_s + demos.seconds)
    if run is not None:
        return run.finish(model, adapter, result, dest)
    adapter.save(model, dest)
    return result


class _Demos:
    """The recipe's expert demos per setting, collected when a stage first needs them."""

    def __init__(self, recipe: PretrainRecipe):
        self.recipe, self.seconds, self._by_setting = recipe, 0.0, {}

    def __call__(self, setting: str) -> DemoFrames:
        from retain import sim

        if setting not in self._by_setting:
            r, t0 = self.recipe, time.perf_counter()
            frames = collect_frames(list(sim.PRETRAIN_TASKS), setting, r.episodes, r.seed, r.noise, r.policy_config.get("image_size"))
            if len(frames) == 0:
                raise invalid(f"the experts produced no successful pretraining episode in {setting}; check the simulator")
            self._by_setting[setting] = frames
            self.seconds += time.perf_counter() - t0
        return self._by_setting[setting]


def _run_stage(stage: str, model, adapter, recipe: PretrainRecipe, demos: _Demos, progress: bool, device: str,
               **at) -> tuple[TrainReport, int, float]:
    """Train `model` through one stage in place: (its report, the frames it added, seconds spent relabelling)."""
    from retain.train import train_bc

    if stage == "bc":
        data = demos(recipe.setting)
        report = train_bc(model, adapter, data, recipe.steps, recipe.lr, recipe.batch_size, recipe.seed, threads=recipe.threads,
                          progress=progress, targets=True, device=device, bf16=recipe.bf16, compile=recipe.compile, **at)
        return report, len(data), 0.0
    if stage == "dagger":
        visited, relabel_s, report = dagger_stage(model, adapter, demos(recipe.setting), recipe, recipe.dagger_episodes,
                                                  recipe.dagger_steps, recipe.dagger_lr, recipe.dagger_share, recipe.threads,
                                                  progress, device=device, **at)
        return report, len(visited), relabel_s
    cont = recipe.continuations[int(stage.removeprefix("continue")) - 1]
    visited, relabel_s, report = continue_stage(model, adapter, recipe, cont, demos, progress, device=device, **at)
    new_demos = len(demos(cont.setting)) if cont.setting and cont.setting != recipe.setting else 0
    return report, new_demos + len(visited), relabel_s


def continue_stage(model, adapter, recipe: PretrainRecipe, cont: Continuation, demos=None, progress: bool = False, *,
                   device: str = "cpu", resume=None, checkpoint=None) -> tuple[Any, float, TrainReport]:
    """One continuation of `recipe`'s base on `model`, in place: its DAgger stage in its own setting.
    `demos(setting)` gives the recipe's demos in a setting (None: collected here). Returns as
    `dagger_stage` does."""
    stage = cont.stage_recipe(recipe)
    data = (demos or _Demos(recipe))(stage.setting)
    return dagger_stage(model, adapter, data, stage, cont.episodes, cont.steps, cont.lr, cont.share, stage.threads, progress,
                        device=device, resume=resume, checkpoint=checkpoint)


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


def shipped_names() -> list[str]:
    """The bases that ship in retain/assets: "default", then earlier defaults kept by name."""
    return ["default"] * SHIPPED_MANIFEST.exists() + sorted(p.stem.removeprefix("base-") for p in ASSETS.glob("base-*.json"))


def _shipped_files(name: str) -> tuple[Path, Path]:
    """(weights, manifest) of the shipped base called `name`; an unknown name is one clear error."""
    if name == "default":
        return SHIPPED_BASE, SHIPPED_MANIFEST
    if name not in shipped_names():
        raise invalid(f"no shipped base is called {name!r}; the package ships {', '.join(shipped_names())}")
    return ASSETS / f"base-{name}.safetensors", ASSETS / f"base-{name}.json"


def _shipped_manifest(name: str = "default") -> dict[str, Any]:
    """A shipped base's recorded config, recipe and hash; a missing or damaged file is one clear error."""
    path = _shipped_files(name)[1]
    try:
        manifest = json.loads(path.read_text())
        complete = {"recipe", "weight_hash"} <= manifest.keys() and isinstance(manifest["config"]["policy_config"]["image_size"], int)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        complete = False
    if not complete:
        raise corrupt(f"the shipped base's manifest {path} is missing or damaged; reinstall the package")
    return manifest


def shipped_base(name: str = "default") -> ShippedBase:
    """A base that ships in retain/assets (the default one unless named), checked against its recorded hash."""
    from registry.checkpoint import open_checkpoint, weight_hash

    weights = _shipped_files(name)[0]
    if not weights.exists():
        raise corrupt(f"the shipped base is missing from {ASSETS}; reinstall the package or run `retain pretrain`")
    manifest = _shipped_manifest(name)
    with open_checkpoint(weights) as ckpt:
        actual = weight_hash(ckpt)
    if actual != manifest["weight_hash"]:
        raise corrupt(f"the shipped base in {weights} has hash {actual}, not the recorded {manifest['weight_hash']}; reinstall the package")
    return ShippedBase(weights, manifest["config"], PretrainRecipe.from_dict(manifest["recipe"]), actual, manifest.get("metrics", {}))


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
    """Replace retain/assets/base (the default shipped base) with `result`'s weights and record
    recipe, config and hash."""
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
    """python -m retain.pretrain [--check [--name NAME]]: regenerate the shipped base, or reproduce one and compare."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(
        prog="python -m retain.pretrain",
        description="Retrain the shipped default base from its recorded recipe (about 40 minutes on 2 idle cores) "
        "and overwrite retain/assets/base.{safetensors,json}; with --check, reproduce a shipped base and compare "
        "hashes without writing anything.")
    ap.add_argument("--check", action="store_true", help="reproduce the shipped base and report MATCH or DIFFERENT; writes nothing")
    ap.add_argument("--name", default="default", help="with --check: which shipped base (default, or an earlier one kept by name)")
    args = ap.parse_args(argv)  # anything else (a typo of --check) stops here, before the training
    if args.name != "default" and not args.check:
        ap.error("--name goes with --check: only the default base is regenerated")
    recipe = shipped_base(args.name).recipe if args.check else PretrainRecipe.preset("default")
    with tempfile.TemporaryDirectory() as tmp:
        res = pretrain(recipe, Path(tmp) / "base", progress=True)
        if args.check:
            from registry.checkpoint import open_checkpoint, weight_hash

            with open_checkpoint(res.weights_dir) as ckpt:
                got = weight_hash(ckpt)
            shipped = shipped_base(args.name).weight_hash  # hashes the shipped file: once
            print(f"reproduced {got}; shipped {shipped}; {'MATCH' if got == shipped else 'DIFFERENT'}")
            if got != shipped:
                print(check_note(_shipped_manifest(args.name).get("runtime")))
        else:
            print(f"wrote {write_shipped_base(res)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
