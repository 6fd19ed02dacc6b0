"""Seconds per behaviour-cloning step of the default base's network, as `train_bc` runs it
(deterministic kernels), against the same step with deterministic mode's NaN fill of every new
tensor left on (the torch default that `deterministic_torch` turns off). A report, not a test.

    python benchmarks/train_step.py                   # 2 threads, batch 48, 64 px (the pretrain recipe)
    python benchmarks/train_step.py --threads 1 --batch 32 --steps 20   # a finetune's shape

The two variants alternate in blocks inside one process, so a busy machine slows both alike;
the ratio is the figure to read. Both end with the same weight hash (checked and printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per block")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per variant, alternating")
    args = ap.parse_args(argv)

    import retain.train as train
    from registry.checkpoint import open_checkpoint, weight_hash
    from retain import sim
    from retain.pretrain import collect_frames, shipped_base
    from retain.policies import get_policy

    base = shipped_base()
    adapter, config = get_policy(base.config["policy"]), base.config["policy_config"]
    data = collect_frames(list(sim.PRETRAIN_TASKS), "pretrain", 100, seed=0, noise=0.1, image_size=config["image_size"])
    seconds: dict[str, list[float]] = {"default": [], "nan_fill": []}
    hashes: dict[str, str] = {}
    for block in range(args.blocks):
        for name in seconds:
            train.FILL_NEW_MEMORY = name == "nan_fill"
            model = adapter.load(base.weights_dir, config)
            train.train_bc(model, adapter, data, 2, 3e-4, args.batch, 1, threads=args.threads, targets=True)  # warm-up
            model = adapter.load(base.weights_dir, config)
            t = time.perf_counter()
            train.train_bc(model, adapter, data, args.steps, 3e-4, args.batch, 1, threads=args.threads, targets=True)
            seconds[name].append((time.perf_counter() - t) / args.steps)
            if block == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    with open_checkpoint(adapter.save(model, Path(tmp) / "w")) as ckpt:
                        hashes[name] = weight_hash(ckpt)
    train.FILL_NEW_MEMORY = False
    best = {k: min(v) for k, v in seconds.items()}
    report = {"threads": args.threads, "batch": args.batch, "steps_per_block": args.steps,
              "seconds_per_step": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
              "best_seconds_per_step": {k: round(v, 4) for k, v in best.items()},
              "nan_fill_over_default": round(best["nan_fill"] / best["default"], 3),
              "same_weights": hashes["default"] == hashes["nan_fill"]}
    print(json.dumps(report, indent=2))
    print(f"{'variant':<10}{'best s/step':>12}")
    for k, v in best.items():
        print(f"{k:<10}{v:>12.4f}")
    print(f"nan fill costs x{report['nan_fill_over_default']:.3f}; same weights: {report['same_weights']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
