"""`retain pretrain` and `retain eval`: make a generalist base, score a version in the simulator.

torch is imported inside the command functions only, so `retain --help` stays fast.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from registry.cli_support import emit, json_option, registry_from_ctx
from registry.errors import invalid

SPLITS = ("id", "ood", "generalist", "all")


def device_option(f):
    """--device, shared by the commands that train or evaluate."""
    from retain.device import DEVICE_HELP

    return click.option("--device", default=None, help=f"Where to run: {DEVICE_HELP} [default: auto]")(f)


@click.command("pretrain")
@click.option("--config", "config_name", default=None, help="Preset: tiny (seconds), default (the shipped base), clutter (the base shipped before it, without its receptacle stages) or minilm (clutter with a pretrained text encoder; needs the minilm extra).  [default: default]")
@click.option("--episodes", type=int, default=None, help="Generalist expert episodes to collect (default: the preset's).")
@click.option("--steps", type=int, default=None, help="Training steps (default: the preset's).")
@click.option("--seed", type=int, default=None, help="Seeds collection, initialisation and batch order.  [default: 0]")
@click.option("--dagger-episodes", type=int, default=None, help="DAgger stage: policy episodes whose states the expert relabels (default: the preset's).")
@click.option("--dagger-steps", type=int, default=None, help="DAgger stage: training steps on expert demos plus relabelled states (default: the preset's; 0 with --dagger-episodes 0 for no stage).")
@click.option("--dagger-roll-in", type=float, default=None,
              help="DAgger stage: the expert drives each rollout's first U[0, this) share of its steps, in [0, 1).")
@click.option("--setting", default=None, help="Simulator setting the demos come from (default: the preset's, pretrain).")
@click.option("--dagger-setting", default=None, help="Setting the DAgger stage rolls out in (default: the preset's, pretrain-clutter for default; \"\" means --setting).")
@device_option
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast of the forward pass (CUDA only; recorded).  [default: off]")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the forward (CUDA graphs on a GPU; recorded when on).  [default: off]")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Checkpoint the run into this new folder, so `--resume DIR` can continue it after a stop or a kill.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this folder from its last checkpoint (options, if given, must match its recorded ones).")
@click.option("--checkpoint-minutes", type=float, default=None, help="With --run-dir/--resume: minutes between checkpoints.  [default: 10]")
@click.option("--checkpoint-steps", type=int, default=None, help="With --run-dir/--resume: checkpoint every N steps instead of by time.")
@click.option("--ref", default="main", show_default=True, help="Ref the new base version goes on.")
@click.option("-m", "--message", default=None, help="Message recorded with the version.")
@click.option("--shipped", "shipped", is_flag=False, flag_value="default", default=None, metavar="[NAME]",
              help="Commit a shipped base (hash-checked) instead of training it again: the default one, or an earlier default by name (clutter).")
@click.option("--force", is_flag=True, help="Move a ref that heads a learned chain, or add a root whose weights another root holds.")
@json_option
@click.pass_context
def pretrain_cmd(ctx: click.Context, config_name: str | None, episodes: int | None, steps: int | None, seed: int | None,
                 dagger_episodes: int | None, dagger_steps: int | None, dagger_roll_in: float | None, setting: str | None,
                 dagger_setting: str | None, device: str | None, bf16: bool | None, compile_: bool | None, run_dir: Path | None, resume_dir: Path | None,
                 checkpoint_minutes: float | None, checkpoint_steps: int | None, ref: str, message: str | None, shipped: str | None,
                 force: bool, as_json: bool) -> None:
    """Collect generalist demos from the scripted experts, train the built-in VLA on them, and
    commit it as a base version (how=pretrain) with its recipe.

    The default recipe reproduces the shipped base bit for bit on a machine like the one it was
    made on (about 40 min on 2 idle cores: 6,000 cloning steps, a 1,500-step DAgger stage in
    clutter, then 1,000 and 3,000 DAgger steps among extra receptacles).
    A long run checkpoints into --run-dir every 10 minutes; `--resume DIR` continues it from the
    last checkpoint to the same bytes (on the CPU) and commits it.

    Example: retain pretrain --config tiny --episodes 40 --steps 50 --seed 1
    """
    options = {"config": config_name, "episodes": episodes, "steps": steps, "seed": seed, "dagger_episodes": dagger_episodes,
               "dagger_steps": dagger_steps, "dagger_roll_in": dagger_roll_in, "setting": setting, "dagger_setting": dagger_setting,
               "bf16": bf16, "compile": compile_}
    if shipped is not None:
        changed = {**options, "config": None if config_name == "default" else config_name, "seed": seed or None}
        _commit_shipped_base(ctx, shipped, ref, message, force, as_json, changed=[*changed.values(), device, run_dir, resume_dir])
        return
    from retain.pretrain_recipe import PretrainRecipe
    from retain.pretrain import pretrain, resume_pretrain, version_config
    from retain.provenance import code_version, runtime

    if run_dir is not None and resume_dir is not None:
        raise invalid("--run-dir starts a run and --resume continues one; give one of them")
    if resume_dir is None and (checkpoint_minutes is not None or checkpoint_steps is not None) and run_dir is None:
        raise invalid("--checkpoint-minutes/--checkpoint-steps need --run-dir DIR (or --resume DIR) to write checkpoints into")
    with registry_from_ctx(ctx) as reg:
        reg.check_base_import(ref, force)  # before the training, not after it
        with tempfile.TemporaryDirectory(prefix="retain-pretrain-") as tmp:
            if resume_dir is not None:
                result = resume_pretrain(resume_dir, None, progress=not as_json, device=device,
                                         checkpoint_minutes=checkpoint_minutes, checkpoint_steps=checkpoint_steps, **options)
                recipe = result.recipe
            else:
                from retain.device import device_kind, resolve_device

                actual = resolve_device(device)
                recipe = PretrainRecipe.preset(config_name or "default", episodes=episodes, steps=steps, seed=seed or 0,
                                               dagger_episodes=dagger_episodes, dagger_steps=dagger_steps,
                                               dagger_roll_in=dagger_roll_in, setting=setting, dagger_setting=dagger_setting,
                                               device=device_kind(actual), bf16=bf16, compile=compile_)  # validates first
                result = pretrain(recipe, Path(tmp) / "weights", progress=not as_json, device=actual, run_dir=run_dir,
                                  checkpoint_minutes=10.0 if checkpoint_minutes is None else checkpoint_minutes,
                                  checkpoint_steps=checkpoint_steps)
            version = reg.import_base(
                result.weights_dir, ref=ref, how="pretrain", config=version_config(recipe), force=force,
                recipe={"source": "retain pretrain", **recipe.to_dict(), "frames": result.frames, "final_loss": result.report.final_loss,
                        "code_version": code_version(), "runtime": runtime(recipe.device)},
                message=message or f"pretrain {recipe.config}: {recipe.episodes} episodes, {recipe.steps} steps, seed {recipe.seed}",
            )
            if resume_dir is not None or run_dir is not None:
                from retain.pretrain_run import mark_committed

                mark_committed(resume_dir or run_dir, version.name)
    out = {"version": version.name, "weight_hash": version.weight_hash, "frames": result.frames,
           "final_loss": result.report.final_loss, "train_seconds": round(result.report.seconds, 1),
           "collect_seconds": round(result.collect_seconds, 1)}
    emit(out, as_json, lambda o: (f"{o['version']}: pretrained on {o['frames']} frames, final loss {o['final_loss']:.4f} "
                                  f"({o['collect_seconds']}s collecting, {o['train_seconds']}s training), {o['weight_hash']}"))


def _commit_shipped_base(ctx: click.Context, name: str, ref: str, message: str | None, force: bool, as_json: bool, changed: list) -> None:
    from registry.cli_support import base_move_text
    from retain.pretrain import shipped_base

    if any(c is not None for c in changed):
        raise invalid("--shipped takes the recorded recipe as it is; drop --config/--episodes/--steps/--seed/--setting/--dagger-*/"
                      "--device/--bf16/--compile/--run-dir/--resume, or drop --shipped to train")
    base = shipped_base(name)  # checked against the hash recorded beside it
    with registry_from_ctx(ctx) as reg:
        before = reg.head(ref)
        version = reg.import_base(base.weights_dir, ref=ref, how="pretrain", config=base.config,
                                  recipe={"source": "retain pretrain (shipped)", **base.recipe.to_dict()},
                                  message=message or f"the shipped {name} base", force=force)
    committed = before is None or before.name != version.name
    out = {"version": version.name, "weight_hash": version.weight_hash, "ref": ref, "committed": committed}
    emit(out, as_json, lambda o: f"{o['version']}: the shipped {name} base ({o['weight_hash']}); {base_move_text(ref, before, version)}")


@click.command("eval")
@click.argument("version")
@click.option("--skill", default=None, help="Skill to evaluate (omit for the generalist suite only).")
@click.option("--split", default="all", show_default=True, help="id, ood, one ood:<family>, generalist or all.")
@click.option("-n", "--episodes", type=int, default=100, show_default=True, help="Episodes per split.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Evaluation seed: the same seed and -n give the same scenes (paired episodes); another -n draws other "
                   "scenes, not a prefix or an extension of them.")
@device_option
@json_option
@click.pass_context
def eval_cmd(ctx: click.Context, version: str, skill: str | None, split: str, episodes: int, seed: int, device: str | None,
             as_json: bool) -> None:
    """Evaluate VERSION in the simulator and record its scores (rate and Wilson 95% interval).
    The policy runs on --device (a GPU's scores record the evaluator as retain-sim-v1@cuda).

    Example: retain eval v1 --skill plates --split ood -n 200
    """
    if episodes < 1:
        raise invalid(f"-n must be at least 1 episode, got {episodes}")
    from retain.device import resolve_device

    device = resolve_device(device)
    from registry.checkpoint import checkpoint_bytes
    from retain.eval_pool import EvalJob, EvalPool
    from registry.evaluations import describe
    from retain.evaluate import GENERALIST, check_task, settings_for, to_scores

    if skill is not None:
        check_task(skill)
    settings = settings_for(split, skill)
    with registry_from_ctx(ctx) as reg:
        v = reg.resolve(version)
        _check_policy(v)
        with reg.work_folder("eval") as tmp:
            path = str(reg.checkout(v.name, Path(tmp) / "weights"))
            with EvalPool(model_bytes=checkpoint_bytes(path)) as pool:
                results = pool.run([EvalJob(v.config, path, GENERALIST if s == GENERALIST else skill, s, episodes, seed, device)
                                    for s in settings])
        reg.record_scores(v.name, to_scores(results, skill, seed, device))
        shown = {(s.skill, s.split): s for s in reg.scores(v.name)}
    rows = []
    for r in results:
        figure = shown.get((None if r.setting == GENERALIST else skill, r.setting))
        kept = figure is not None and (figure.episodes, figure.seed) != (r.episodes, seed)
        rows.append({"skill": r.task, "split": r.setting, "successes": r.successes, "episodes": r.episodes,
                     "rate": r.rate, "low": r.low, "high": r.high, "seed": seed,
                     "shown": None if not kept else {"successes": figure.successes, "episodes": figure.episodes,
                                                     "rate": figure.rate, "evaluation": describe(figure)}})
    emit({"version": v.name, "scores": rows}, as_json, lambda o: _table(o["version"], o["scores"]))


def _check_policy(v) -> None:
    if not (v.config or {}).get("policy"):
        raise invalid(f"version {v.name} records no policy in its config; import it with `retain base import PATH --config FILE` naming the policy")


def _table(version: str, rows: list[dict]) -> str:
    lines = [f"{version}", f"{'skill':<14}{'split':<18}{'success':>10}{'rate':>8}  95% interval"]
    for r in rows:
        lines.append(f"{r['skill']:<14}{r['split']:<18}{r['successes']:>5}/{r['episodes']:<4}{r['rate']:>8.2f}  [{r['low']:.2f}, {r['high']:.2f}]")
    kept = [r for r in rows if r.get("shown")]
    for r in kept:
        s = r["shown"]
        lines.append(f"note: {version} {r['skill']} {r['split']} still shows {s['successes']}/{s['episodes']} ({s['evaluation']}), "
                     f"which has more episodes; this evaluation is recorded beside it")
    if kept:
        lines.append(f"every evaluation: retain scores {version} --all")
    return "\n".join(lines)
