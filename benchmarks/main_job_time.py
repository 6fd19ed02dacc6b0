"""Time the README's main job (main_job.sh) against its target: under 10 minutes on a 2-core CPU.

Runs the job as a user would, records the wall time of each `retain ...` step (from the job's own
echo lines) and the stage timings `learn` prints, then prints a short table and one JSON line.

    python -m benchmarks.main_job_time [--out benchmarks/out/main_job_time.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--log", default=None, help="also write the job's own output here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", str(ROOT / "main_job.sh")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    steps: list[dict] = []
    learn_timings: list[dict] = []
    log = open(args.log, "w") if args.log else None
    for line in proc.stdout:
        if log:
            log.write(line)
        now = time.perf_counter() - t0
        if line.startswith("$ retain "):
            if steps:
                steps[-1]["seconds"] = round(now - steps[-1]["start"], 1)
            steps.append({"command": line[2:].strip(), "start": now})
        m = re.match(r"timings: (.*)", line)
        if m:
            learn_timings.append({k: float(v.rstrip("s")) for k, v in (p.split(" ") for p in m.group(1).split(", "))})
    proc.wait()
    if log:
        log.close()
    total = time.perf_counter() - t0
    if steps:
        steps[-1]["seconds"] = round(total - steps[-1]["start"], 1)
    for s in steps:
        s.pop("start")
    result = {"seconds": round(total, 1), "target_seconds": TARGET_S, "within_target": total < TARGET_S,
              "exit_code": proc.returncode, "steps": steps, "learn_timings": learn_timings, "cpus": os.cpu_count()}
    for s in steps:
        print(f"{s['seconds']:>7.1f} s  {s['command']}")
    print(f"{total:>7.1f} s  total (target < {TARGET_S:.0f} s; exit code {proc.returncode})")
    print(json.dumps(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
