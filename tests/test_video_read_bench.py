"""benchmarks/video_read.py at a tiny size: it runs, and its reads are deterministic and consistent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av")  # the [video] extra, part of [test]
ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_prints_json_and_a_table():
    r = subprocess.run([sys.executable, "-m", "benchmarks.video_read", "--episodes", "2", "--length", "6", "--size", "32"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout.splitlines()[0])
    assert doc["frames"] == 12 and doc["one_episode_frames"] == 6
    assert doc["deterministic"] is True and doc["one_episode_equal_to_full"] is True
    assert doc["read_all_s"] > 0 and "read without pixels" in r.stdout
