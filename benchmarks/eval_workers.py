"""What evaluation workers buy: the evaluate stage of `learn plates` on the shipped base (the
merged backbone's, the plain finetune's and the parent's jobs, 50 episodes each) run in this
process and in worker processes, and whether the outcomes are the same (a report, not a test).

    python -m benchmarks.eval_workers                  # 1 worker against every core (up to 8)
    python -m benchmarks.eval_workers --workers 1 2 4 --episodes 50

The shipped base stands in for all three checkpoints (the cost of a rollout does not depend on the
weights' values, and identical outcomes are what is checked). Workers are started and warmed up
before the clock starts, as `learn` starts them during its finetune. Prints one JSON line, then a
short table; the ratio against one worker is the figure to read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time



def main(argv: list[str] | None = None) -> int:
    from retain.eval_pool import EvalJob, EvalPool, default_workers
    from retain.evaluate import GENERALIST, ood_settings
    from retain.pretrain import shipped_base

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts to compare (default: 1 and every core)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    counts = args.workers or sorted({1, default_workers()})

    base = shipped_base()
    splits = [(s, "id") for s in ["plates"]] + [("plates", f) for f in ood_settings()] + [(GENERALIST, GENERALIST)]
    # learn plates on v0: the merged backbone (its validation score reused), the finetune and the parent
    jobs = [EvalJob(base.config, str(base.weights_dir), task, split, args.episodes, args.seed)
            for task, split in splits[:1] + splits[2:] + splits + splits]
    rows, outcomes = [], {}
    for n in counts:
        with EvalPool(workers=n) as pool:
            pool.start()
            pool.run(jobs[:2])  # warm: workers up, torch imported, kernels loaded
            start = time.perf_counter()
            results = pool.run(jobs)
            seconds = time.perf_counter() - start
        outcomes[n] = [r.outcomes for r in results]
        rows.append({"workers": n, "jobs": len(jobs), "seconds": round(seconds, 2)})
    for r in rows:
        r["speedup_vs_1"] = round(rows[0]["seconds"] / r["seconds"], 2) if rows[0]["workers"] == 1 else None
    same = all(o == outcomes[counts[0]] for o in outcomes.values())
    print(json.dumps({"episodes": args.episodes, "results": rows, "same_outcomes": same}))
    print(f"{'workers':>7}  {'jobs':>4}  {'seconds':>8}  {'x vs 1':>6}")
    for r in rows:
        print(f"{r['workers']:>7}  {r['jobs']:>4}  {r['seconds']:>8.2f}  {r['speedup_vs_1'] or '-':>6}")
    print(f"same outcomes for every worker count: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
