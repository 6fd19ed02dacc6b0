"""Do many processes opening one new SQLite registry at once all succeed?

Each run makes a fresh file and starts --processes forked processes behind a barrier; each opens
the database as `retain init` does (make_engine, then the schema upgrade to head) at the same
instant. A run fails if any process raises. Before the fix of 6 December 2026 (one transaction per
upgrade; a WAL switch that waits) this failed 3 runs in 30 at 8 processes ("duplicate column name",
"table ... already exists"); the figure to watch is failing_runs, which should be 0.

Prints JSON, then a short table.

Usage:
    python -m benchmarks.sqlite_init_race                     # 30 runs of 8 processes
    python -m benchmarks.sqlite_init_race --runs 60 --processes 8
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path


def _open(path: str, barrier, results) -> None:
    from registry import db

    try:
        barrier.wait()
        engine = db.make_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        engine.dispose()
        results.put(None)
    except BaseException as e:  # report every failure, whatever its kind
        results.put(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")


def one_run(path: Path, processes: int) -> list[str]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(str(path), barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return [o for o in outcomes if o]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--processes", type=int, default=8)
    args = ap.parse_args(argv)
    import registry.db  # noqa: F401  (imported once, before forking)

    failures, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            errors = one_run(Path(tmp) / f"r{run}.db", args.processes)
            if errors:
                failures.append({"run": run, "first_error": errors[0], "failed_processes": len(errors)})
    out = {"runs": args.runs, "processes": args.processes, "failing_runs": len(failures),
           "seconds": round(time.perf_counter() - t0, 1), "failures": failures}
    print(json.dumps(out, indent=1))
    print(f"\n{'runs':>6} {'processes':>10} {'failing runs':>13}\n{args.runs:>6} {args.processes:>10} {len(failures):>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
