"""Training throughput of `train_bc` as the pretrain and learn commands run it: samples/s and
seconds per step for the shipped base's network and for a 7.65 M-parameter one, on the CPU or a
GPU. A report, not a test.

    python -m benchmarks.train_step                                  # CPU, 2 threads, batch 48 (the pretrain recipe)
    python -m benchmarks.train_step --threads 1 --batch 32 --steps 20  # a finetune's shape
    python -m benchmarks.train_step --device cuda                    # batch 256, fp32 and bf16, both networks
    python -m benchmarks.train_step --nan-fill                       # also: deterministic mode's NaN fill left on
    python -m benchmarks.train_step --device cuda --compile          # also: fp32 through torch.compile (CUDA graphs)

Configs: `shipped` is the shipped base (retain/assets/base.json); `7.65M` is
VLAConfig(vision_channels=96, d_model=256, d_action=192, n_heads=8, language_layers=6,
action_layers=2) with the default preset's flags (64 px, FiLM, heat-map locate feeding the action
expert); `tiny` is the shipped network at the tiny pretrain preset's sizes (for smoke runs). `--compile`
adds "<config> fp32 compiled" variants (train_bc(compile=True): mode reduce-overhead on CUDA, the
default on the CPU); the compile happens in the untimed warm-up run, whose seconds are reported as
warmup_s. Each timed run trains `--steps` steps from the same start on 100 expert episodes of the
pretraining tasks; variants alternate in blocks in one process, so a busy machine slows all alike.
A figure includes everything a step of a real run costs (batch drawing, the optimizer, the loss
read every 50 steps) and a run's fixed start-up spread over its steps; min and median over blocks.
On the CPU the weight hash after each variant's first block is printed: the code path is
bit-exact with itself, and the same hash from two versions of the code means the same arithmetic.
Runs against older code too (only the CPU options are passed to train_bc there).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


LARGE = {"vision_channels": 96, "d_model": 256, "d_action": 192, "n_heads": 8, "language_layers": 6, "action_layers": 2}


def _configs(names: list[str]) -> dict[str, dict]:
    from retain.pretrain_recipe import PRESETS
    from retain.pretrain import shipped_base

    shipped = shipped_base().config["policy_config"]
    flags = dict(PRESETS["default"]["policy_config"])
    table = {"shipped": shipped, "7.65M": {**shipped, **flags, **LARGE}, "tiny": {**shipped, **PRESETS["tiny"]["policy_config"]}}
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; use shipped, 7.65M and/or tiny")
    return {n: table[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--configs", default=None, help="comma-separated: shipped,7.65M (default: shipped on cpu, both on cuda)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default 48 on cpu, 256 on cuda")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per block (default 15 on cpu, 200 on cuda)")
    ap.add_argument("--blocks", type=int, default=3, help="blocks per variant, alternating")
    ap.add_argument("--precisions", default=None, help="fp32,bf16 (default: fp32 on cpu, both on cuda)")
    ap.add_argument("--nan-fill", action="store_true", help="also time deterministic mode's NaN fill of new memory (CPU)")
    ap.add_argument("--compile", nargs="?", const="all", default=None, metavar="CONFIGS",
                    help="also time fp32 through torch.compile: of every config, or of these (comma-separated)")
    ap.add_argument("--episodes", type=int, default=100, help="expert episodes of data")
    ap.add_argument("--json-out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)

    import torch

    import retain.train as train
    from registry.checkpoint import open_checkpoint, weight_hash
    from retain import sim
    from retain.policies import get_policy
    from retain.pretrain import collect_frames

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no GPU here")
    batch = args.batch or (256 if cuda else 48)
    steps = args.steps or (200 if cuda else 15)
    configs = _configs((args.configs or ("shipped,7.65M" if cuda else "shipped")).split(","))
    compiled = [] if args.compile is None else list(configs) if args.compile == "all" else args.compile.split(",")
    if set(compiled) - set(configs):
        raise SystemExit(f"--compile {args.compile}: compile only configs that run (--configs {','.join(configs)})")
    precisions = (args.precisions or ("fp32,bf16" if cuda else "fp32")).split(",")
    adapter = get_policy("builtin-vla")
    data = collect_frames(list(sim.PRETRAIN_TASKS), "pretrain", args.episodes, seed=0, noise=0.1, image_size=64)

    def run(config: dict, n: int, bf16: bool, compile: bool, seed_model: int = 0):
        model = adapter.build(config, seed=seed_model)
        extra = {"device": args.device, "bf16": bf16} if cuda else {}
        if compile:
            extra["compile"] = True
        t, c = time.perf_counter(), time.process_time()
        train.train_bc(model, adapter, data, n, 3e-4, batch, 1, threads=args.threads, targets=True, **extra)
        return time.perf_counter() - t, time.process_time() - c, model

    variants = [(c, p, False, False) for c in configs for p in precisions]
    if args.nan_fill and not cuda:
        variants += [(c, "fp32", True, False) for c in configs]
    variants += [(c, "fp32", False, True) for c in compiled]
    seconds: dict[str, list[float]] = {}
    cpu_seconds: dict[str, list[float]] = {}  # process CPU time: on a shared machine, less noisy than wall time
    hashes: dict[str, str] = {}
    warmup: dict[str, float] = {}
    params = {c: sum(p.numel() for p in adapter.build(cfg).parameters()) for c, cfg in configs.items()}
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if cuda else "cpu"
    for block in range(args.blocks):
        for cname, precision, nan_fill, compile in variants:
            key = f"{cname} {precision}" + (" nan_fill" if nan_fill else "") + (" compiled" if compile else "")
            train.FILL_NEW_MEMORY = nan_fill
            if block == 0:  # warm-up: kernels, allocator, (cuDNN) plans; the compile, and CUDA graphs' recording
                warmup[key] = round(run(configs[cname], 3 if compile else 2, precision == "bf16", compile)[0], 2)
            s, c, model = run(configs[cname], steps, precision == "bf16", compile)
            seconds.setdefault(key, []).append(s / steps)
            cpu_seconds.setdefault(key, []).append(c / steps)
            if block == 0 and not cuda:
                with tempfile.TemporaryDirectory() as tmp:
                    with open_checkpoint(adapter.save(model, Path(tmp) / "w")) as ckpt:
                        hashes[key] = weight_hash(ckpt)
            report = _report(args, batch, steps, device_name, params, seconds, cpu_seconds, hashes, warmup)
            if args.json_out:  # after every run: a run stopped by a time limit keeps what it measured
                part = Path(args.json_out + ".partial")
                part.write_text(json.dumps(report, indent=2) + "\n")
                part.replace(args.json_out)
    train.FILL_NEW_MEMORY = False
    rows = report["results"]
    print(json.dumps(report, indent=2))
    print(f"{'variant':<24}{'params':>10}{'min s/step':>12}{'median':>10}{'samples/s':>11}{'cpu s/step':>12}")
    for k, r in rows.items():
        print(f"{k:<24}{r['params']:>10,}{r['min_s']:>12.4f}{r['median_s']:>10.4f}{r['samples_per_s_best']:>11,.0f}"
              f"{r['cpu_seconds_per_step_min']:>12.4f}")
    return 0


def _report(args, batch: int, steps: int, device_name: str, params: dict, seconds: dict, cpu_seconds: dict, hashes: dict,
            warmup: dict) -> dict:
    import torch

    rows = {k: {"params": params[k.split()[0]], "seconds_per_step": [round(x, 5) for x in v],
                "min_s": round(min(v), 5), "median_s": round(statistics.median(v), 5),
                "samples_per_s_best": round(batch / min(v), 1), "samples_per_s_median": round(batch / statistics.median(v), 1),
                "cpu_seconds_per_step_min": round(min(cpu_seconds[k]), 5), "cpu_seconds_per_step_median": round(statistics.median(cpu_seconds[k]), 5),
                "warmup_s": warmup[k], **({"weight_hash": hashes[k]} if k in hashes else {})} for k, v in seconds.items()}
    return {"device": args.device, "device_name": device_name, "torch": torch.__version__, "threads": args.threads,
            "batch": batch, "steps_per_block": steps, "blocks": args.blocks, "results": rows}


if __name__ == "__main__":
    sys.exit(main())
