"""Is generalist success lost along the merge path because of the task, or because of the path?

The testbed shows merges of a task finetune losing most of the base's generalist success even at
uniform alpha 0.5. That has two readings: the base sits on a knife edge where any move of its
weights costs closed-loop success (then no merge could keep it), or the task demos push the
weights somewhere harmful (then the fault is the finetune's direction, not its size). This
script tells them apart with a control: the same recipe (steps, lr, batch, seed) finetunes the
base once on a skill's narrow ID demos and once on fresh demos of the base's own pretraining
distribution. For each it prints how far every modality moved (||delta|| / ||theta_pre||) and
the generalist success of uniform merges at each alpha, on paired episodes.

    nice python -m benchmarks.merge_path                        # plates, shipped base, alphas 0 0.5 1
    nice python -m benchmarks.merge_path --skill whiteboard --steps 300 --lr 1e-4 --episodes 200
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.base_args import add_base_args, add_finetune_args, resolve_base, run_cleanly


def relative_moves(pre: dict, ft: dict, modality_of) -> dict[str, float]:
    """||ft - pre|| / ||pre|| per modality (float tensors only; unmapped names under "other")."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, p in pre.items():
        if not p.is_floating_point():
            continue
        m = modality_of(name) or "other"
        num[m] = num.get(m, 0.0) + float((ft[name].double() - p.double()).pow(2).sum())
        den[m] = den.get(m, 0.0) + float(p.double().pow(2).sum())
    return {m: (num[m] / den[m]) ** 0.5 if den[m] else 0.0 for m in sorted(num)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skill", default="plates")
    ap.add_argument("--demos", type=int, default=50, help="narrow ID demos of the skill")
    ap.add_argument("--control-episodes", type=int, default=400, help="pretraining-distribution demos for the control")
    add_finetune_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    ap.add_argument("--episodes", type=int, default=200, help="generalist episodes per alpha (paired)")
    add_base_args(ap)
    args = ap.parse_args(argv)
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        ap.error(f"--alphas {args.alphas} must lie in [0, 1]")

    import torch

    from retain import sim
    from retain.evaluate import GENERALIST, check_task, evaluate
    from retain.merge import merge_checkpoints
    from retain.partitions import get_partition_map
    from retain.pretrain import collect_frames
    from retain.train import train_bc

    check_task(args.skill)
    torch.set_num_threads(args.threads)
    base_dir, adapter, config = resolve_base(args)
    size = config.get("image_size")
    modality_of = get_partition_map(adapter.partition_preset).modality_of
    pre = adapter.load(base_dir, config).state_dict()
    sources = {
        args.skill: collect_frames([args.skill], "id", args.demos, seed=1_000 + args.seed, image_size=size),
        "control": collect_frames(list(sim.PRETRAIN_TASKS), "pretrain", args.control_episodes, seed=2_000 + args.seed, image_size=size),
    }
    rows = []
    base_score = None
    work = Path(tempfile.mkdtemp(prefix="merge_path-"))
    try:
        for name, frames in sources.items():
            model = adapter.load(base_dir, config)
            rep = train_bc(model, adapter, frames, args.steps, args.lr, args.batch, args.seed, threads=args.threads)
            ft_dir = adapter.save(model, work / f"ft-{name}")
            row = {"data": name, "frames": len(frames), "loss": [rep.first_loss, rep.final_loss],
                   "moved": relative_moves(pre, model.state_dict(), modality_of), "generalist": {}}
            for alpha in args.alphas:
                if alpha == 0.0 and base_score is not None:  # alpha 0 is the base whatever it was finetuned on
                    row["generalist"][str(alpha)] = base_score
                    continue
                merged_dir = work / f"m-{name}-{alpha}"
                merge_checkpoints(base_dir, [ft_dir], [alpha], adapter.partition_preset, merged_dir, progress=False)
                r = evaluate(adapter.load(merged_dir, config), adapter, GENERALIST, GENERALIST, args.episodes, 10_000 + args.seed)
                row["generalist"][str(alpha)] = [r.successes, r.episodes]
                base_score = row["generalist"][str(alpha)] if alpha == 0.0 else base_score
                shutil.rmtree(merged_dir)
            rows.append(row)
            print(f"[{name}] loss {rep.first_loss:.3f} -> {rep.final_loss:.3f}; " + "  ".join(
                f"alpha {a}: {s}/{n}" for a, (s, n) in row["generalist"].items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    mods = sorted({m for r in rows for m in r["moved"]})
    print(f"\n{'finetuned on':14s}" + "".join(f"{'moved ' + m:>16s}" for m in mods)
          + "".join(f"{'gen a=' + str(a):>12s}" for a in args.alphas))
    for r in rows:
        print(f"{r['data']:14s}" + "".join(f"{r['moved'][m]:16.3f}" for m in mods)
              + "".join(f"{s / n:12.3f}" for s, n in r["generalist"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
