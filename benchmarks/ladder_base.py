"""Train one of the ladder's bases from a pretrain preset with overrides, resumably, into the
folder layout `benchmarks/ladder.py --base NAME=DIR` reads (weights/, policy_config.json, and
recipe.json with the recipe and its cost).

    python -m benchmarks.ladder_base --out /work/runs/weak --preset clutter --set steps=2000 \
        --set dagger_steps=500 --set dagger_episodes=1000 --set threads=1
    # after a stop or a kill, the same command continues from the last checkpoint (--run-dir
    # defaults to OUT.run) and ends with the bytes of an uninterrupted run on the CPU

The recipe is `PretrainRecipe.preset(PRESET, **overrides)`, so a rung is `retain pretrain` with
those options (threads included), reproducible the same way.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.base_args import run_cleanly


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set {text!r}: write FIELD=VALUE, e.g. steps=2000")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string such as a setting's name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the rung's folder (new, or written whole at the end)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                    help="FIELD=VALUE recipe override (repeat)")
    ap.add_argument("--run-dir", default=None, help="checkpoint folder (default: OUT.run)")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    args = ap.parse_args(argv)

    from registry.errors import already_exists
    from retain.pretrain_recipe import PretrainRecipe
    from retain.pretrain import pretrain, resume_pretrain

    out = Path(args.out)
    if out.exists():
        raise already_exists(f"--out {out} already exists; choose a new folder")
    run_dir = Path(args.run_dir) if args.run_dir else out.with_name(out.name + ".run")
    recipe = PretrainRecipe.preset(args.preset, **dict(args.overrides))
    partial = out.with_name(f".{out.name}.partial")  # renamed into place whole
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = time.perf_counter()
    if run_dir.exists() and any(run_dir.iterdir()):
        result = resume_pretrain(run_dir, partial / "weights", progress=True)
    else:
        result = pretrain(recipe, partial / "weights", progress=True, run_dir=run_dir,
                          checkpoint_minutes=args.checkpoint_minutes)
    wall = time.perf_counter() - t0
    (partial / "policy_config.json").write_text(json.dumps(result.recipe.policy_config, indent=1, sort_keys=True) + "\n")
    cost = {"collect_s": round(result.collect_seconds, 1), "train_s": round(result.report.seconds, 1),
            "wall_s_this_process": round(wall, 1), "final_loss": result.report.final_loss, "frames": result.frames}
    (partial / "recipe.json").write_text(json.dumps({"recipe": result.recipe.to_dict(), "cost": cost}, indent=1, sort_keys=True) + "\n")
    partial.rename(out)
    print(json.dumps(cost))
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
