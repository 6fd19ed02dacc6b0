"""What a wider (more over-parameterised) built-in policy costs a pretraining step, against the
shipped base's width, and where that puts the default recipe against its 30-minute budget.
A report, not a test.

    python -m benchmarks.policy_width                        # 2 threads, batch 48: the pretrain recipe's shape
    python -m benchmarks.policy_width --widths vision_channels=96 vision_channels=128,d_model=192,d_action=192
    python -m benchmarks.policy_width --widths language_backbone=minilm,max_words=24            # MiniLM, frozen
    python -m benchmarks.policy_width --widths language_backbone=minilm,max_words=24 --unfrozen --threads 1 --batch 32

Each width is a set of VLAConfig overrides of the shipped base's config, trained from a fresh
init by `train_bc` on the same pretraining frames; the variants alternate in blocks inside one
process, so a busy machine slows all alike, and the ratio to the shipped width is the figure to
read. The projection scales the shipped recipe's recorded training seconds by that ratio and adds
the rest of its recorded wall time (collection, DAgger rollouts), both as `retain/assets/base.json`
records them from the machine it was made on.
"""
from __future__ import annotations

import argparse
import json
import time


DEFAULT_WIDTHS = ["vision_channels=96", "vision_channels=128", "vision_channels=128,d_model=192,d_action=192",
                  "vision_channels=128,d_model=256,d_action=256,n_heads=8"]


def parse_width(text: str) -> dict[str, "int | str"]:
    out: dict[str, "int | str"] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()  # language_backbone=minilm
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", default=DEFAULT_WIDTHS, help="VLAConfig overrides, e.g. vision_channels=96")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per block")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per width, alternating")
    ap.add_argument("--episodes", type=int, default=100, help="pretraining episodes per task to train on")
    ap.add_argument("--unfrozen", action="store_true",
                    help="train a pretrained text encoder too (learn's finetune); by default it is frozen, as pretraining keeps it")
    args = ap.parse_args(argv)

    from retain import sim
    from retain.policies import get_policy
    from retain.pretrain import collect_frames, freeze_pretrained_text, shipped_base
    from retain.train import train_bc

    base = shipped_base()
    adapter, shipped = get_policy(base.config["policy"]), base.config["policy_config"]
    widths = {"shipped": {}, **{w: parse_width(w) for w in args.widths}}
    data = collect_frames(list(sim.PRETRAIN_TASKS), "pretrain", args.episodes, seed=0, noise=0.1, image_size=shipped["image_size"])
    seconds: dict[str, list[float]] = {name: [] for name in widths}
    params: dict[str, int] = {}
    for _ in range(args.blocks):
        for name, over in widths.items():
            model = adapter.build({**shipped, **over}, seed=0)
            params[name] = sum(p.numel() for p in model.parameters())
            if not args.unfrozen:
                freeze_pretrained_text(model)
            train_bc(model, adapter, data, 2, 3e-4, args.batch, 1, threads=args.threads, targets=True)  # warm-up
            t = time.perf_counter()
            train_bc(model, adapter, data, args.steps, 3e-4, args.batch, 1, threads=args.threads, targets=True)
            seconds[name].append((time.perf_counter() - t) / args.steps)
    best = {k: min(v) for k, v in seconds.items()}
    metrics = base.metrics
    train_s = float(metrics.get("train_seconds", 0.0))
    wall_s = train_s + float(metrics.get("collect_seconds", 0.0))
    rows = {}
    for name in widths:
        ratio = best[name] / best["shipped"]
        rows[name] = {"parameters": params[name], "best_seconds_per_step": round(best[name], 4),
                      "seconds_per_step": [round(x, 4) for x in seconds[name]], "over_shipped": round(ratio, 3),
                      "projected_pretrain_minutes": round((wall_s + train_s * (ratio - 1)) / 60, 1) if train_s else None}
    report = {"threads": args.threads, "batch": args.batch, "steps_per_block": args.steps, "text_encoder_trains": args.unfrozen,
              "recorded_train_seconds": train_s, "widths": rows}
    print(json.dumps(report, indent=2))
    print(f"{'width':<56}{'params':>10}{'s/step':>9}{'x':>7}{'min':>7}")
    for name, r in rows.items():
        print(f"{name:<56}{r['parameters']:>10,}{r['best_seconds_per_step']:>9.4f}{r['over_shipped']:>7.2f}"
              f"{r['projected_pretrain_minutes'] or float('nan'):>7.1f}")
    return report


if __name__ == "__main__":
    main()
