"""benchmarks/eval_workers.py runs and reports the same outcomes for every worker count."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_prints_json_a_table_and_equal_outcomes():
    out = subprocess.run([sys.executable, "-m", "benchmarks.eval_workers", "--episodes", "1", "--workers", "1", "2"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.splitlines()[0])
    assert [r["workers"] for r in doc["results"]] == [1, 2] and doc["same_outcomes"] is True
    assert all(r["jobs"] == 23 and r["seconds"] > 0 for r in doc["results"])
    assert "same outcomes for every worker count: True" in out.stdout
