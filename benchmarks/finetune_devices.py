"""Does a finetune on a GPU learn what the same finetune on the CPU learns? A report, not a test.

    python -m benchmarks.finetune_devices --device cuda --out curves.json
    python -m benchmarks.finetune_devices --device cpu --steps 20 --episodes 4   # a smoke run without a GPU

From the shipped base, on the same plates demos, with the same seed (so the same batches: the
batch generator lives on the CPU whatever the device), it finetunes `--steps` steps as `learn`
does (batch 32, lr 5e-4) on the CPU and on `--device`, fp32 and, on CUDA, bf16 autocast. The
loss is logged every `--log-every` steps. The yardstick for "within noise" is a second CPU run
that differs only in its seed (other batches): the device's curve should sit closer to the CPU
curve than that one does, and its final loss within the seed-to-seed gap. The device run is done
twice: deterministic kernels should give the same weight hash both times. Writes both curves,
the gaps and a verdict to `--out` (JSON) and prints a short table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=50, help="plates demos (ID setting), as learn collects")
    ap.add_argument("--batch", type=int, default=32, help="learn's default")
    ap.add_argument("--threads", type=int, default=4, help="torch threads of the CPU runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from registry.checkpoint import open_checkpoint, weight_hash
    from retain.pretrain import collect_frames, shipped_base
    from retain.policies import get_policy
    from retain.train import train_bc

    base = shipped_base()
    adapter, config = get_policy(base.config["policy"]), base.config["policy_config"]
    demos = collect_frames(["plates"], "id", args.episodes, seed=0, image_size=config["image_size"])

    def finetune(device: str, seed: int, bf16: bool = False) -> dict:
        model = adapter.load(base.weights_dir, config)
        t = time.perf_counter()
        rep = train_bc(model, adapter, demos, args.steps, 5e-4, args.batch, seed, threads=args.threads, log_every=args.log_every,
                       **({"device": device, "bf16": bf16} if device != "cpu" else {}))
        with tempfile.TemporaryDirectory() as tmp:
            with open_checkpoint(adapter.save(model, Path(tmp) / "w")) as ckpt:
                digest = weight_hash(ckpt)
        return {"device": device, "seed": seed, "bf16": bf16, "seconds": round(time.perf_counter() - t, 2),
                "first_loss": rep.first_loss, "final_loss": rep.final_loss, "losses": rep.losses, "weight_hash": digest}

    plan = [("device", args.device, 0, False), ("device_again", args.device, 0, False), ("cpu", "cpu", 0, False),
            ("cpu_other_seed", "cpu", 1, False)] + ([("device_bf16", args.device, 0, True)] if args.device.startswith("cuda") else [])
    runs: dict = {}
    for name, device, seed, bf16 in plan:  # the device's runs first; each result saved as it comes, should time run out
        runs[name] = finetune(device, seed, bf16)
        if args.out:
            Path(args.out).write_text(json.dumps({"partial": True, "runs": runs}, indent=2) + "\n")
    runs = {k: runs[k] for k in ("cpu", "cpu_other_seed", "device", "device_again", "device_bf16") if k in runs}

    def gap(a: dict, b: dict) -> dict:
        pairs = list(zip(a["losses"], b["losses"]))
        return {"max_abs": max(abs(x - y) for x, y in pairs), "mean_abs": sum(abs(x - y) for x, y in pairs) / len(pairs),
                "final_abs": abs(a["final_loss"] - b["final_loss"])}

    noise = gap(runs["cpu"], runs["cpu_other_seed"])
    gaps = {k: gap(runs["cpu"], v) for k, v in runs.items() if k.startswith("device") and k != "device_again"}
    verdict = {k: g["mean_abs"] <= noise["mean_abs"] and g["final_abs"] <= max(noise["final_abs"], 0.02) for k, g in gaps.items()}
    report = {"device": args.device, "device_name": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "steps": args.steps, "batch": args.batch, "log_every": args.log_every, "frames": len(demos),
              "runs": runs, "noise_cpu_seed_0_vs_1": noise, "gap_to_cpu": gaps, "within_noise": verdict,
              "device_repeats_bit_for_bit": runs["device"]["weight_hash"] == runs["device_again"]["weight_hash"]}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'run':<16}{'seconds':>9}{'first':>9}{'final':>9}{'mean |gap| to cpu':>20}")
    for k, r in runs.items():
        g = noise if k == "cpu_other_seed" else gaps.get(k, gaps.get("device") if k == "device_again" else None)
        print(f"{k:<16}{r['seconds']:>9.1f}{r['first_loss']:>9.4f}{r['final_loss']:>9.4f}{'' if g is None else format(g['mean_abs'], '.4f'):>20}")
    print(f"within noise (seed-to-seed gap on the CPU as the yardstick): {verdict}; "
          f"{args.device} run repeats bit for bit: {report['device_repeats_bit_for_bit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
