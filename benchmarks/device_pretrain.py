"""Pretrain a stronger base on a GPU within a fixed wall-clock budget, and bring it back small.

The base: the default recipe's two stages (behaviour cloning on expert demos of the 21 pretraining
tasks, then the roll-in DAgger stage in pretrain-clutter) with all-MiniLM-L6-v2 as the language
backbone, frozen, and by default the larger network (vision_channels 96, width 256, action width
192, 8 heads, 6 fusion layers, 2 action layers). The steps are not fixed in advance: a 30-step
calibration measures the step time on the device and the stages get the steps that fit the budget
(four fifths to the first, as 6,000 to 1,500 in the default recipe); the recipe written beside the
weights records what ran, so `pretrain` can replay it (on the same runtime, the same bytes).

    python -m benchmarks.device_pretrain pack --out .minilm-pack          # here, once: a 37 MB pruned MiniLM
    bash benchmarks/device_pretrain.sh                                   # on the GPU machine (writes under $OUT)
    python -m benchmarks.device_pretrain complete --src DIR --out BASE   # here: the full checkpoint for testbed.py

The GPU machine receives at most 64 MiB, so it gets the pruned copy of MiniLM (every weight, only
the embedding rows of the pretraining instructions' word pieces; retain/policies/minilm.py) and
returns only the weights that are not MiniLM's (frozen, so equal to the package's), sharded below
16 MiB a file. `complete` puts the package's MiniLM back and writes weights/ + policy_config.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path


LARGE = {"vision_channels": 96, "d_model": 256, "d_action": 192, "n_heads": 8, "language_layers": 6, "action_layers": 2}
MINILM = {"language_backbone": "minilm", "max_words": 24}
SHARD_BYTES = 15 * 2**20
TEXT = "language.text."


def pretraining_texts() -> list[str]:
    """Every template of every task and every word a scene fills in: what a pruned copy must keep."""
    from retain.sim.scene import COLOR_NAMES, FIXTURE_NAMES, SHAPES
    from retain.sim.tasks import _CORNERS, TASKS

    return ([t for task in TASKS.values() for t in task.templates + task.heldout]
            + COLOR_NAMES + SHAPES + list(FIXTURE_NAMES.values()) + list(_CORNERS) + ["mat", "button"])


def cmd_pack(args) -> int:
    from retain.policies import minilm

    path = minilm.write_pruned(Path(args.out), pretraining_texts())
    print(json.dumps({"pack": str(path), "mib": round(path.stat().st_size / 2**20, 1)}))
    return 0


def _calibrate(model, adapter, data, batch: int, threads: int, device: str) -> float:
    """Seconds per training step of a throwaway copy (after 5 warm-up steps)."""
    from retain.train import train_bc

    probe = copy.deepcopy(model)
    train_bc(probe, adapter, data, 5, 1e-4, batch, 0, threads=threads, targets=True, device=device)
    report = train_bc(probe, adapter, data, 30, 1e-4, batch, 0, threads=threads, targets=True, device=device)
    return report.seconds / 30


def cmd_train(args) -> int:
    import torch

    from retain import sim
    from retain.policies import get_policy
    from retain.pretrain_recipe import PretrainRecipe
    from retain.pretrain import collect_frames, dagger_relabel, freeze_pretrained_text
    from retain.train import TrainReport, deterministic_torch, train_bc

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from retain.device import device_kind, resolve_device

    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = args.tiny
    overrides = {**MINILM, **({} if args.default_width or tiny else LARGE)}
    preset = "tiny" if tiny else "clutter"  # its own two stages; the default adds continuations it does not run
    adapter = get_policy("builtin-vla")
    recipe = PretrainRecipe.preset(preset, episodes=args.episodes, batch_size=args.batch, threads=args.threads,
                                   dagger_episodes=args.dagger_episodes or (16 if tiny else None),
                                   **({"dagger_steps": 4, "dagger_roll_in": 0.6, "dagger_setting": "pretrain-clutter"} if tiny else {}))
    recipe = dataclasses.replace(recipe, policy_config=adapter.config({**recipe.policy_config, **overrides}).to_dict(),
                                 device=device_kind(device))
    data = collect_frames(list(sim.PRETRAIN_TASKS), recipe.setting, recipe.episodes, recipe.seed, recipe.noise,
                          recipe.policy_config.get("image_size"))
    collect_s = time.perf_counter() - t0
    with deterministic_torch(recipe.threads):
        model = adapter.build(recipe.policy_config, seed=recipe.seed)
    freeze_pretrained_text(model)
    params = {"trainable": sum(p.numel() for n, p in model.named_parameters() if not n.startswith(TEXT)),
              "minilm": sum(p.numel() for n, p in model.named_parameters() if n.startswith(TEXT))}
    model.tokenize(data.tasks)  # a word piece missing from a pruned MiniLM copy stops here, not mid-run
    # retain.train runs GPU kernels deterministic where a deterministic version exists, warning otherwise
    deterministic = "warn_only" if device.startswith("cuda") else "strict"
    step_s = _calibrate(model, adapter, data, recipe.batch_size, recipe.threads, device)
    spent = time.perf_counter() - t0
    train_s = max(args.budget - spent - args.reserve, 10 * step_s)
    steps = max(int(train_s / step_s), 10)
    steps1 = steps if tiny else max(100 * (steps * 4 // 5 // 100), 100)
    recipe = dataclasses.replace(recipe, steps=steps1)
    report = train_bc(model, adapter, data, recipe.steps, recipe.lr, recipe.batch_size, recipe.seed,
                      threads=recipe.threads, targets=True, device=device)  # the model comes back to the CPU
    first = report
    save_trainable(model, out)  # stage one's weights, in case the stage below overruns the machine's time
    write_json(out, recipe, params, device, deterministic, {"stage": "1 of 2", "stage1_train": round(first.seconds, 1),
                                                    "wall": round(time.perf_counter() - t0, 1)}, first, None)
    model.to(device)  # the rollouts' forward passes run there too
    visited, relabel_s = dagger_relabel(model, adapter, recipe, recipe.dagger_episodes, recipe.threads)
    # the second stage gets a quarter of the first's steps (6,000 to 1,500 in the default recipe), or
    # what the budget has left once the rollouts are done, whichever is less
    left = args.budget - (time.perf_counter() - t0) - 15.0
    steps2 = 4 if tiny else max(min(100 * (steps1 // 4 // 100), 100 * int(left / step_s / 100)), 100)
    recipe = dataclasses.replace(recipe, dagger_steps=steps2)
    second = train_bc(model, adapter, data, recipe.dagger_steps, recipe.dagger_lr, recipe.batch_size, recipe.seed + 1,
                      mix=(visited, recipe.dagger_share), threads=recipe.threads, targets=True, device=device)
    report = TrainReport(first.steps + second.steps, first.seconds + second.seconds, first.first_loss,
                         second.final_loss, first.losses + second.losses)
    save_trainable(model, out)
    cost = {"stage": "2 of 2", "collect": round(collect_s, 1), "calibrate_step": round(step_s, 4), "stage1_train": round(first.seconds, 1),
            "relabel": round(relabel_s, 1), "stage2_train": round(second.seconds, 1), "wall": round(time.perf_counter() - t0, 1),
            "frames": len(data) + len(visited)}
    result = write_json(out, recipe, params, device, deterministic, cost, first, second)
    print(json.dumps({k: result[k] for k in ("device", "gpu", "cost_seconds", "parameters", "files")}, indent=1))
    return 0


def write_json(out: Path, recipe, params: dict, device, deterministic: str, cost: dict, first, second) -> dict:
    """device_pretrain.json: the recipe that ran, its cost, loss curve and the files' hashes."""
    import torch

    from retain.policies.minilm import WEIGHTS_SHA256

    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("trainable-*.safetensors"))}
    result = {
        "recipe": recipe.to_dict(),
        "frozen": f"language.text.* (all-MiniLM-L6-v2, sha256 {WEIGHTS_SHA256}), not in the files",
        "device": device, "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        "torch": torch.__version__, "python": platform.python_version(), "deterministic": deterministic,
        "cost_seconds": cost,
        "parameters": params,
        "loss_curve": {"log_every": 50, "stage1": first.losses, "stage2": second.losses if second else None,
                       "first": first.first_loss, "final": (second or first).final_loss},
        "files": files,
    }
    tmp = out / "device_pretrain.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out / "device_pretrain.json")
    return result


def save_trainable(model, out: Path) -> None:
    """Every tensor but MiniLM's, in safetensors shards below 16 MiB."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(TEXT)}
    shards, size = [{}], 0
    for k in sorted(state):
        n = state[k].numel() * state[k].element_size()
        if size + n > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += n
    if len(shards) > 2:
        raise SystemExit(f"Error: {len(shards)} shards; the machine returns at most 3 files (2 shards + the JSON)")
    meta = {"policy": "builtin-vla", "policy_config": json.dumps(model.cfg.to_dict(), sort_keys=True)}
    for i, shard in enumerate(shards):
        path = out / f"trainable-{i}.safetensors"
        save_file(shard, str(path.with_suffix(".tmp")), metadata=meta)
        os.replace(path.with_suffix(".tmp"), path)  # a run killed mid-write leaves the previous shard whole


def cmd_complete(args) -> int:
    """The device's shards + the package's MiniLM -> BASE/weights (one checkpoint) + BASE/policy_config.json."""
    from safetensors import safe_open

    from retain.policies import get_policy

    src, dest = Path(args.src), Path(args.out)
    info = json.loads((src / "device_pretrain.json").read_text())
    cfg = info["recipe"]["policy_config"]
    adapter = get_policy("builtin-vla")
    model = adapter.build(cfg, seed=0)  # MiniLM from the package; every other tensor comes from the shards
    state = model.state_dict()
    seen = set()
    for name, digest in info["files"].items():
        path = src / name
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise SystemExit(f"Error: {path} does not match the sha256 recorded in device_pretrain.json; fetch it again")
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                state[k].copy_(f.get_tensor(k))
                seen.add(k)
    missing = sorted(k for k in state if not k.startswith(TEXT) and k not in seen)
    if missing:
        raise SystemExit(f"Error: the shards lack {missing[:5]}; they are not this recipe's")
    dest.mkdir(parents=True, exist_ok=True)
    adapter.save(model, dest / "weights")
    (dest / "policy_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    (dest / "recipe.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {dest / 'weights'} and {dest / 'policy_config.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write the pruned MiniLM copy the GPU machine receives")
    p.add_argument("--out", required=True)
    t = sub.add_parser("train", help="pretrain within --budget seconds; writes shards + device_pretrain.json to --out")
    t.add_argument("--out", default=os.environ.get("OUT", "out"))
    t.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run, collection included")
    t.add_argument("--reserve", type=float, default=45.0, help="seconds kept for the DAgger rollouts and saving")
    t.add_argument("--episodes", type=int, default=None, help="expert episodes (default: the preset's)")
    t.add_argument("--dagger-episodes", type=int, default=None, help="DAgger rollouts (default: the preset's)")
    t.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    t.add_argument("--threads", type=int, default=8, help="torch CPU threads")
    t.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    t.add_argument("--default-width", action="store_true", help="the shipped base's width instead of the larger network")
    t.add_argument("--tiny", action="store_true", help="the tiny preset: a smoke test of the whole path")
    c = sub.add_parser("complete", help="rebuild the full checkpoint from the returned shards")
    c.add_argument("--src", required=True)
    c.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return {"pack": cmd_pack, "train": cmd_train, "complete": cmd_complete}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
