"""Continue a base with pretraining's DAgger stage: the stronger base the testbed figures compare.

`retain pretrain --dagger-episodes N --dagger-steps M` runs the stage after training from scratch;
this continues a finished base instead (the shipped one by default): it regenerates the base's
pretraining demos from its recipe, rolls the base out on the pretraining tasks, has the expert
relabel every visited state (retain/dagger.py), and trains on demos plus relabelled states.
It is `retain.pretrain.continue_stage`, the stage a recipe's `continuations` run, so where the
base's recipe is recorded (the shipped base, or a recipe.json beside --base) the output's
recipe.json holds the whole recipe, continuation included, that `retain pretrain` makes it with.

    python -m benchmarks.dagger_continue --out /tmp/dagbase          # about 5 minutes on 2 idle cores
    python -m benchmarks.testbed --base /tmp/dagbase/weights --base-config /tmp/dagbase/policy_config.json ...
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.base_args import add_base_args, base_data_recipe, known_recipe, resolve_base, run_cleanly


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

    from retain.pretrain_recipe import Continuation, PretrainRecipe
    from retain.pretrain import continue_stage

    cont = Continuation(args.setting or "", args.episodes, args.steps, args.lr, args.share, args.roll_in, args.threads)
    base_dir, adapter, config = resolve_base(args)
    made_by = known_recipe(args)  # the whole recipe of the base, when it is recorded
    recipe = PretrainRecipe.from_dict(made_by or base_data_recipe(args, config))
    model = adapter.load(base_dir, config)
    t0 = time.perf_counter()
    visited, relabel_s, rep = continue_stage(model, adapter, recipe, cont)
    collect_s = time.perf_counter() - t0 - rep.seconds
    cost = {"collect_s": round(collect_s, 1), "train_s": round(rep.seconds, 1), "final_loss": rep.final_loss,
            "relabelled_frames": len(visited)}
    record = {"command": "python -m benchmarks.dagger_continue " + " ".join(argv if argv is not None else sys.argv[1:]),
              "continues": str(args.base), "cost": cost}
    if made_by is not None:  # `retain pretrain` with this recipe makes the same base from scratch
        record["recipe"] = PretrainRecipe.from_dict({**made_by, "continuations": [*made_by.get("continuations", ()), cont]}).to_dict()
    partial = out.with_name(f".{out.name}.partial")  # renamed into place whole, so a kill leaves no --out
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    adapter.save(model, partial / "weights")
    (partial / "policy_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (partial / "recipe.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    partial.rename(out)
    print(json.dumps({**cost, "setting": cont.setting or recipe.setting, "out": str(out)}, indent=2))
    print(f"\nwrote {out}/weights: {len(visited)} relabelled frames, {args.steps} steps, {collect_s + rep.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
