"""Summarise a chains matrix (benchmarks/chains_matrix.sh): per config and seed, the ID and OOD
(pooled over the OOD families) of plates and whiteboard after the chain, and the generalist suite,
from each run's `retain scores --ref main --json`; means per config. Prints JSON, then a table;
writes summary.json and summary.md beside the runs.

    python -m benchmarks.chains_summary DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CONFIGS = ("old", "new", "rehearse", "coft")
FIELDS = ("plates_id", "plates_ood", "whiteboard_id", "whiteboard_ood", "generalist")


def _rate(cell) -> float | None:
    return None if cell is None else cell["rate"]


def figures(scores: dict) -> dict:
    """The chain's head: each skill's ID and pooled OOD now, and the suite now."""
    s = scores["summary"]
    out = {}
    for p in s["skills"]:
        out[f"{p['skill']}_id"] = _rate(p["id_now"])
        out[f"{p['skill']}_ood"] = _rate(p["ood_now"])
    out["generalist"] = _rate(s["generalist_now"])
    return out


def collect(root: Path) -> list[dict]:
    runs = []
    for run in sorted(root.glob("*-s*/run.json")):
        meta = json.loads(run.read_text())
        scores = run.parent / "scores.json"
        row = {**meta, "failed": not scores.exists()}
        if scores.exists():
            row.update(figures(json.loads(scores.read_text())))
        runs.append(row)
    return runs


def means(runs: list[dict]) -> dict:
    out = {}
    for c in CONFIGS:
        ok = [r for r in runs if r["config"] == c and not r["failed"]]
        if not ok:
            continue
        out[c] = {"seeds": [r["seed"] for r in ok]}
        for f in FIELDS:
            vals = [r[f] for r in ok if r.get(f) is not None]
            out[c][f] = sum(vals) / len(vals) if vals else None
    return out


def table(runs: list[dict], avg: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = ["| config | seed | plates ID | plates OOD | whiteboard ID | whiteboard OOD | generalist | s |", "|---" * 8 + "|"]
    for r in runs:
        if r["failed"]:
            lines.append(f"| {r['config']} | {r['seed']} | failed | | | | | {r['seconds']} |")
        else:
            lines.append(f"| {r['config']} | {r['seed']} | " + " | ".join(pct(r.get(f)) for f in FIELDS) + f" | {r['seconds']} |")
    for c, m in avg.items():
        lines.append(f"| **{c}** mean | {','.join(map(str, m['seeds']))} | " + " | ".join(pct(m[f]) for f in FIELDS) + " | |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.chains_summary DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    runs = collect(root)
    avg = means(runs)
    doc = {"runs": runs, "means": avg}
    (root / "summary.json").write_text(json.dumps(doc, indent=2))
    text = table(runs, avg)
    (root / "summary.md").write_text(text + "\n")
    print(json.dumps(doc))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
