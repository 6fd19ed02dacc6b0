"""How fast do the query commands answer on a registry of 1,000 versions?

Builds a registry through the Python API (tiny weights; every version a learn commit with a
learn run, alpha and 15 scores; a rollback every 100 versions so the graph branches), then times
`lineage`, `scores`, `log` (and `show`):
  - end to end as subprocesses (`python cli.py ... <command>`: interpreter start, imports, open,
    query, print), the figure a user feels, set against two floors measured the same way:
    `python -c pass` (the interpreter) and the import floor (python + the modules the lean query
    path loads: click, cli, registry.commands/reader/render and the database driver);
  - the same subprocess with the query commands sent through `Registry.open` (SQLAlchemy), the
    path they took before registry/reader.py, for comparison;
  - in-process through click's CliRunner (open, query, render; imports already warm).
Prints JSON, then a short table. Median and max over --repeat runs after one warm-up.

Usage:
    python -m benchmarks.registry_queries                      # 1,000 versions on SQLite in a temp dir
    python -m benchmarks.registry_queries --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np

from registry.api import Registry
from registry.checkpoint import save_tensors
from registry.records import NewLearnRun, NewScore

SKILLS = ["plates", "whiteboard", "pot-on-stove", "mugs-on-plates", "items-into-basket"]
SPLITS = ["id", "ood:position", "ood:object"]
COMMANDS = {"lineage": ["lineage"], "scores": ["scores"], "log": ["log"], "show main": ["show", "main"],
            "lineage --json": ["lineage", "--json"], "log --json": ["log", "--json"]}
# The CLI with its query commands opened through Registry.open (SQLAlchemy) instead of the lean reader.
VIA_SQLALCHEMY = """
import os, runpy, sys
root = sys.argv[1]
sys.path.insert(0, root)
import registry.reader
from registry.api import Registry
registry.reader.open_reader = lambda home=None, db_url=None, store_url=None: Registry.open(home=home, db_url=db_url, store_url=store_url)
sys.argv = ["retain", *sys.argv[2:]]
runpy.run_path(os.path.join(root, "cli.py"), run_name="__main__")
"""


def build(reg: Registry, n: int, work: Path) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)

    def weights(i: int) -> Path:
        dest = work / f"w{i}.safetensors"
        save_tensors(dest, {"vision.w": ("F32", (4, 4), rng.standard_normal(16).astype("<f4").tobytes()),
                            "language.w": ("F32", (8,), rng.standard_normal(8).astype("<f4").tobytes())})
        return dest

    reg.import_base(weights(0), name="bench-base")
    for i in range(1, n):
        head = reg.head()
        skill = SKILLS[i % len(SKILLS)]
        run = NewLearnRun(skill=skill, demo_set_id=None, recipe={"mode": "co-ft", "seed": i}, delta_dir=None,
                          alpha={"vision": 1.0, "language": round(0.5 + (i % 5) / 10, 2), "action": 1.0},
                          sweep=[{"alpha": a, "scores": {"ood:position": 0.5}} for a in (0.25, 0.5, 0.75, 1.0)],
                          timings={"finetune_s": 1.0})
        scores = [NewScore(s, sp, (i + k) % 11, 10 + (i % 3), "bench") for k, s in enumerate(SKILLS) for sp in SPLITS]
        reg.commit_version(weights(i), parent=head.name, how="learn", expected_head=head.name, learn_run=run, scores=scores,
                           message=f"learn {skill}")
        if i % 100 == 99:
            reg.rollback(f"v{i - 3}", reason="benchmark branch")
        os.unlink(work / f"w{i}.safetensors")
    return time.perf_counter() - t0


def time_subprocesses(argvs: dict[str, list[str]], repeat: int) -> dict[str, list[float]]:
    """Wall seconds of each command line, `repeat` rounds after a warm-up round. Rounds take every
    command in turn, so floors and commands see the same load on a shared machine."""
    out: dict[str, list[float]] = {label: [] for label in argvs}
    for k in range(repeat + 1):
        for label, argv in argvs.items():
            t0 = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.strip()}")
            if k:  # the first round warms the OS file cache and .pyc files
                out[label].append(dt)
    return out


def time_in_process(args: list[str], repeat: int) -> list[float]:
    from click.testing import CliRunner

    from cli import cli

    runner = CliRunner()
    out = []
    for k in range(repeat + 1):
        t0 = time.perf_counter()
        r = runner.invoke(cli, args)
        dt = time.perf_counter() - t0
        if r.exit_code != 0:
            raise SystemExit(f"{args} failed: {r.output}")
        if k:
            out.append(dt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL of an EMPTY database (default: SQLite in the temp home)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--home", default=None, help="Folder for the registry (default: a new temporary folder); "
                    "one that already holds --versions versions is reused without building")
    a = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="retain-bench-")
    home = Path(a.home or tmp.name) / "home"
    with Registry.open(home=str(home), db_url=a.db, create=True) as reg:
        # An existing --home that already holds the versions is timed as it is (build_s: null).
        build_s = None if len(reg.versions()) >= a.versions else build(reg, a.versions, Path(tmp.name))
        db_url = reg.locations.db_url
        n_versions = len(reg.versions())
    globals_ = ["--home", str(home), "--db", db_url]
    driver = "sqlite3" if db_url.startswith("sqlite") else "psycopg"
    argvs = {
        "python": [sys.executable, "-c", "pass"],
        # The floor a lean query pays before touching the database: interpreter, click, our modules, the driver.
        "floor": [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import cli, registry.commands, "
                  f"registry.reader, registry.render, {driver}", str(ROOT)],
        # The same with SQLAlchemy and the ORM models: the floor of every command that writes.
        "orm_floor": [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import cli, registry.commands, "
                      "registry.api, registry.render", str(ROOT)],
    }
    for label, args in COMMANDS.items():
        argvs[label] = [sys.executable, str(ROOT / "cli.py"), *globals_, *args]
        argvs[label + " (orm)"] = [sys.executable, "-c", VIA_SQLALCHEMY, str(ROOT), *globals_, *args]
    times = time_subprocesses(argvs, a.repeat)
    baseline, floor, orm_floor = (statistics.median(times[k]) for k in ("python", "floor", "orm_floor"))
    results = {}
    for label, args in COMMANDS.items():
        sub, orm = times[label], times[label + " (orm)"]
        inp = time_in_process([*globals_, *args], a.repeat)
        med = statistics.median(sub)
        results[label] = {"subprocess_median_s": med, "subprocess_max_s": max(sub),
                          "above_python_s": med - baseline, "above_import_floor_s": med - floor,
                          "via_sqlalchemy_median_s": statistics.median(orm),
                          "in_process_median_s": statistics.median(inp), "in_process_max_s": max(inp)}
    report = {
        "versions": n_versions,
        "scores_per_version": len(SKILLS) * len(SPLITS),
        "database": db_url.split(":", 1)[0],
        "build_s": None if build_s is None else round(build_s, 2),
        "repeat": a.repeat,
        "python_startup_median_s": baseline,
        "lean_import_floor_median_s": floor,
        "sqlalchemy_import_floor_median_s": orm_floor,
        "commands": results,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))
    print()
    print(f"{'command':<15} {'process median':>14} {'max':>7} {'- python':>9} {'- floor':>8} {'via SQLAlchemy':>15} {'in-process':>11}")
    for label, r in results.items():
        print(f"{label:<15} {r['subprocess_median_s']:>13.3f}s {r['subprocess_max_s']:>6.3f}s {r['above_python_s']:>8.3f}s "
              f"{r['above_import_floor_s']:>7.3f}s {r['via_sqlalchemy_median_s']:>14.3f}s {r['in_process_median_s']:>10.3f}s")
    print(f"(python -c pass: {baseline:.3f}s; lean import floor: {floor:.3f}s; with SQLAlchemy: {orm_floor:.3f}s; "
          f"{n_versions} versions on {report['database']}; load average {report['loadavg_1m']:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
