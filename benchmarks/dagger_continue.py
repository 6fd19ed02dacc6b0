"""Continue a base with pretraining's DAgger stage: the stronger base the testbed figures compare.

`retain pretrain --dagger-episodes N --dagger-steps M` runs the stage after training from scratch;
this continues a finished base instead (the shipped one by default): it regenerates the base's
pretraining demos from its recipe, rolls the base out on the pretraining tasks, has the expert
relabel every visited state (retain/dagger.py), and trains on demos plus relabelled states.

    python -m benchmarks.dagger_continue --out /tmp/dagbase          # about 5 minutes on 2 idle cores
    python -m benchmarks.testbed --base /tmp/dagbase/weights --base-config /tmp/dagbase/policy_config.json ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.base_args import add_base_args, base_data_recipe, resolve_base, run_cleanly


def continue_recipe(recipe, setting: str | None, roll_in: float):
    """The base's data recipe with the continuation's setting for the demos and the rollouts both.

    The shipped recipe names its own rollout setting (`dagger_setting`: pretrain-clutter), so a
    `--setting` that replaced only the demos' left the rollouts there; the ladder's first `recept`
    rung was made that way."""
    from retain.sim.settings import get_setting

    if setting:
        from benchmarks import testbed_probes

        testbed_probes.register()
        name = get_setting(setting).name
        recipe = dataclasses.replace(recipe, setting=name, dagger_setting=name)
    return dataclasses.replace(recipe, dagger_roll_in=roll_in)  # validates it


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=3000, help="policy episodes whose states the expert relabels")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--share", type=float, default=0.5, help="share of each batch from relabelled states")
    ap.add_argument("--roll-in", type=float, default=0.0,
                    help="the expert drives each rollout's first U[0, this) share of its steps (retain/dagger.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="new folder: weights/ and policy_config.json")
    ap.add_argument("--setting", default=None,
                    help="draw the demos and rollouts from this setting instead of the base's (e.g. pretrain-clutter or pretrain-receptacles)")
    add_base_args(ap)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        from registry.errors import already_exists

        raise already_exists(f"--out {out} already exists; choose a new folder")

    from retain import sim
    from retain.pretrain import PretrainRecipe, collect_frames, dagger_stage

    base_dir, adapter, config = resolve_base(args)
    recipe = continue_recipe(PretrainRecipe.from_dict(base_data_recipe(args, config)), args.setting, args.roll_in)
    t0 = time.perf_counter()
    demos = collect_frames(list(sim.PRETRAIN_TASKS), recipe.setting, recipe.episodes, recipe.seed, recipe.noise,
                           config.get("image_size"))
    collect_s = time.perf_counter() - t0
    model = adapter.load(base_dir, config)
    visited, relabel_s, rep = dagger_stage(model, adapter, demos, recipe, args.episodes, args.steps, args.lr, args.share, args.threads)
    collect_s += relabel_s
    partial = out.with_name(f".{out.name}.partial")  # renamed into place whole, so a kill leaves no --out
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    adapter.save(model, partial / "weights")
    (partial / "policy_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    partial.rename(out)
    summary = {"base": args.base, "setting": recipe.setting, "demo_frames": len(demos), "relabelled_frames": len(visited), "collect_s": round(collect_s, 1),
               "train_s": round(rep.seconds, 1), "final_loss": rep.final_loss, "out": str(out)}
    print(json.dumps(summary, indent=2))
    print(f"\nwrote {out}/weights: {len(visited)} relabelled frames, {args.steps} steps, {collect_s + rep.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
