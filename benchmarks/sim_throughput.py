"""Simulator throughput and scripted-expert success rates (a report, not a test).

    python -m benchmarks.sim_throughput                 # env-steps/s, n=256, rendering on
    python -m benchmarks.sim_throughput --experts 100   # + expert success of every task x setting

Prints one JSON object, then a short table. Throughput counts env-steps (episodes x steps) per
second of wall time for TabletopBatch.step + expert_actions, images rendered every step, one
process (numpy may use its own threads; set OMP_NUM_THREADS=1 for a strict one-core figure).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from retain import sim


def throughput(tasks: list[str], setting: str, n: int, image_size: int, steps: int, seed: int = 0) -> float:
    batch = sim.TabletopBatch(tasks, setting, n, seed, image_size=image_size)
    batch.reset()
    batch.step(batch.expert_actions())   # warm up
    batch.done[:] = False                # keep every episode live: count full-batch steps only
    start = time.perf_counter()
    for _ in range(steps):
        batch.step(batch.expert_actions())
        batch.done[:] = False
        batch.success[:] = False
    return n * steps / (time.perf_counter() - start)


def expert_rates(episodes: int, seed: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    plan = [(t, "generalist") for t in sim.PRETRAIN_TASKS] + [(t, "id") for t in sim.PRETRAIN_TASKS]
    plan += [(t, s) for t in sim.SKILLS for s in ["id", *sim.OOD_FAMILIES, "generalist"]]
    for task, setting in plan:
        b = sim.TabletopBatch([task], setting, episodes, seed)
        b.reset()
        while not b.done.all():
            b.step(b.expert_actions())
        out.setdefault(task, {})[setting] = float(b.success.mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--experts", type=int, default=0, help="episodes per task x setting (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cases = [("one skill, id", ["plates"], "id", 32), ("all tasks, generalist", sim.PRETRAIN_TASKS + sim.SKILLS, "generalist", 32),
             ("all tasks, generalist, 64 px", sim.PRETRAIN_TASKS + sim.SKILLS, "generalist", 64)]
    result: dict = {"n": a.n, "steps": a.steps, "throughput": {}}
    for name, tasks, setting, size in cases:
        result["throughput"][name] = round(throughput(tasks, setting, a.n, size, a.steps, a.seed))
    if a.experts:
        result["expert_success"] = expert_rates(a.experts, a.seed)
        result["expert_episodes"] = a.experts
    print(json.dumps(result, indent=2))
    print(f"\n{'case':<32} env-steps/s (n={a.n}, rendering)")
    for k, v in result["throughput"].items():
        print(f"{k:<32} {v:>10,}")
    if a.experts:
        rates = [v for d in result["expert_success"].values() for v in d.values()]
        worst = min((v, t, s) for t, d in result["expert_success"].items() for s, v in d.items())
        print(f"\nexpert success over {len(rates)} task x setting cells ({a.experts} episodes each): "
              f"min {worst[0]:.2f} ({worst[1]} / {worst[2]}), mean {np.mean(rates):.3f}")


if __name__ == "__main__":
    main()
