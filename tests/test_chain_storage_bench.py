"""benchmarks/chain_storage.py at the tiny size: a two-skill chain is learned, stored as packs,
checked out (head and a rebuilt v1) and replayed bit for bit, and the figures come out as JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_runs_a_chain_and_reports_its_storage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.chain_storage", "--size", "tiny", "--skills", "2",
                        "--update", "0.01", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    res = doc["results"][0]
    assert res["skills"] == 2 and len(res["learns"]) == 2
    # the first learn adds the head's whole copy and its packs; the next drops the old head's copy
    first, second = (x["store_added_equiv"] for x in res["learns"])
    assert first > 1.0 > second > 0
    assert res["checkout_v1_s"] > 0 and res["replay_s"] > 0  # replay exits non-zero unless every hash matched
    assert "disk/version packs" in r.stdout
    assert not any(tmp_path.iterdir())  # the multi-GB work is deleted unless --keep
