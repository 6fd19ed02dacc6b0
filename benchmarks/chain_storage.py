"""Chain storage benchmark: a chain of skills at pi0 size, stored as packs, against storing every version whole.

Builds a synthetic pi0-like base (openpi PyTorch names and shapes from merge_bench.py, bf16,
sharded at 2 GB), imports it, then learns `--skills` skills one after another, each from weights
"finetuned elsewhere" that this script makes from the head's own weights (every tensor moved by
Gaussian noise of `--update` times the weights' scale, rounded to bf16: the finetune a user's
trainer would hand to `learn --finetuned`), merged with the default language search's shape
(vision = action = 1, language 0.5; fixed, as there is no evaluator):

    retain learn skill-K --finetuned FT --preset openpi-pi0 --alpha vision=1,language=0.5,action=1

Measured, each command as its own process (wall clock), store sizes after `retain gc --grace 0`:
  disk per version   store bytes added per learned version / checkpoint bytes (checkpoint-equivalents)
  learn              wall time of each learn (no evaluation runs: alpha is fixed, the base has no
                     policy), and its recorded stages (checkout, merge, finetune pack, commit)
  checkout           `retain checkout`-equivalent (`retain export`) of the head (its whole copy:
                     what storing every version whole costs for ANY version) and of v1 (rebuilt
                     from the base through its pack)
  replay             `retain replay skill-N` (rebuild the finetune from its pack, merge, compare hashes)
The "whole" column is what storing every version whole gives: disk = one checkpoint per version,
checkout of any version = the head's measured checkout (a whole copy read back).

Usage:
    python -m benchmarks.chain_storage --size 3B --workdir /work/chain-bench     # pi0 size: 3.24 B params, 6.5 GB
    python -m benchmarks.chain_storage --size 0.5B --update 0.01 0.1             # smaller, two finetune sizes
Prints one JSON object, then a table. Deletes the multi-GB files unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.merge_bench import CONFIGS, SHARD, evict, pi0_shapes
from registry.checkpoint import CheckpointWriter, TensorSpec, open_checkpoint

ROOT = Path(__file__).resolve().parents[1]

ALPHA = "vision=1,language=0.5,action=1"
SCALE = 0.02  # the synthetic weights' standard deviation
CHUNK = 1 << 22


def make_base(dest: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    specs = [TensorSpec(n, "BF16", shapes[n]) for n in sorted(shapes)]
    g = torch.Generator().manual_seed(seed)
    with CheckpointWriter(dest, specs, SHARD) as w:
        for spec in specs:
            w.write_parts(spec.name, ((torch.randn(min(CHUNK, spec.numel - s), generator=g) * SCALE).bfloat16()
                                      .view(torch.uint8).numpy() for s in range(0, spec.numel, CHUNK)))


def make_finetuned(parent: Path, dest: Path, update: float, seed: int) -> None:
    """`parent` with every value moved by N(0, update * SCALE), in bf16: a finetune from the head's weights."""
    g = torch.Generator().manual_seed(seed)
    with open_checkpoint(parent) as p:
        specs = [TensorSpec(n, p.specs[n].dtype, p.specs[n].shape) for n in p.names]
        with CheckpointWriter(dest, specs, SHARD) as w:
            for spec in specs:
                raw = p.read(spec.name)

                def parts(raw=raw, n=spec.numel):
                    for s in range(0, n, CHUNK):
                        k = min(CHUNK, n - s)
                        x = torch.frombuffer(bytearray(raw[2 * s: 2 * (s + k)]), dtype=torch.bfloat16).float()
                        yield (x + torch.randn(k, generator=g) * (update * SCALE)).bfloat16().view(torch.uint8).numpy()

                w.write_parts(spec.name, parts())
                del raw


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return round(time.perf_counter() - t0, 2)


def chain(label: str, update: float, skills: int, work: Path, keep: bool) -> dict:
    from registry.api import Registry

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RETAIN_HOME": str(home)}
    retain = [sys.executable, str(ROOT / "cli.py")]
    shapes = pi0_shapes(CONFIGS[label])
    t0 = time.perf_counter()
    make_base(work / "base", shapes, seed=0)
    make_s = round(time.perf_counter() - t0, 2)
    with open_checkpoint(work / "base") as ck:
        ckpt_bytes, params = ck.total_bytes, sum(s.numel for s in ck.specs.values())
    run(retain + ["init"], env)
    run(retain + ["base", "import", str(work / "base"), "--name", f"pi0-{label}"], env)
    run(retain + ["gc", "--grace", "0"], env)
    sizes = [du(home / "store")]
    learns = []
    for k in range(1, skills + 1):
        with Registry.open(home=str(home)) as reg:
            head = reg.head("main").name
            reg.checkout(head, work / "head")
        make_finetuned(work / "head", work / "ft", update, seed=k)
        shutil.rmtree(work / "head")
        evict(work / "ft", home / "store")
        wall = run(retain + ["learn", f"skill-{k}", "--finetuned", str(work / "ft"), "--preset", "openpi-pi0", "--alpha", ALPHA,
                            "-q"], env)
        with Registry.open(home=str(home)) as reg:
            timings = reg.learn_run_for(reg.head("main").name).timings
        shutil.rmtree(work / "ft")
        run(retain + ["gc", "--grace", "0"], env)
        sizes.append(du(home / "store"))
        learns.append({"skill": f"skill-{k}", "wall_s": wall, "stages": timings,
                       "store_added_equiv": round((sizes[-1] - sizes[-2]) / ckpt_bytes, 3)})
    head = f"v{skills}"
    evict(home / "store")
    checkout_head = run(retain + ["export", head, "-o", str(work / "out-head")], env)
    shutil.rmtree(work / "out-head")
    evict(home / "store")
    checkout_v1 = run(retain + ["export", "v1", "-o", str(work / "out-v1")], env)
    shutil.rmtree(work / "out-v1")
    evict(home / "store")
    replay = run(retain + ["replay", f"skill-{skills}", "-q"], env)
    learned_bytes = sizes[-1] - sizes[0]
    result = {
        "size": label, "params": params, "checkpoint_bytes": ckpt_bytes, "update": update, "skills": skills,
        "make_base_s": make_s, "base_store_bytes": sizes[0], "store_bytes": sizes[-1],
        "packs_equiv_per_version": round(learned_bytes / ckpt_bytes / skills, 3),
        "whole_equiv_per_version": 1.0,
        "learns": learns, "learn_mean_s": round(sum(x["wall_s"] for x in learns) / skills, 2),
        "checkout_head_s": checkout_head, "checkout_v1_s": checkout_v1, "replay_s": replay,
    }
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def table(results: list[dict]) -> str:
    rows = [("size", "update", "disk/version packs", "whole", "learn s", "checkout v1 s", "head (= whole) s", "replay s")]
    for r in results:
        rows.append((f"{r['size']} ({r['params'] / 1e9:.2f} B)", f"{r['update']:g}", f"{r['packs_equiv_per_version']:.3f}x", "1.000x",
                     f"{r['learn_mean_s']:.1f}", f"{r['checkout_v1_s']:.1f}", f"{r['checkout_head_s']:.1f}", f"{r['replay_s']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="3B", choices=sorted(CONFIGS))
    ap.add_argument("--skills", type=int, default=3)
    ap.add_argument("--update", type=float, nargs="+", default=[0.01],
                    help="finetune size: each value moves by N(0, UPDATE x the weights' scale)")
    ap.add_argument("--workdir", default="/work/chain-bench")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    results = []
    for u in args.update:
        results.append(chain(args.size, u, args.skills, Path(args.workdir) / f"{args.size}-{u:g}", args.keep))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # each chain as it finishes
    print(json.dumps({"alpha": ALPHA, "shard_bytes": SHARD, "results": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
