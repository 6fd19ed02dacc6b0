"""benchmarks/base_skills.py: a base's per-split success on skills and probes, and its bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.base_skills", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_the_shipped_base_is_scored_on_a_probe_and_a_pretraining_task():
    r = _run("--skills", "place-box-5", "put-in-box", "--splits", "id", "ood:distractor", "--episodes", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {"place-box-5", "put-in-box"} and set(out["put-in-box"]) == {"id", "ood:distractor"}
    assert all(v in (0.0, 25.0, 50.0, 75.0, 100.0) for row in out.values() for v in row.values())  # 4 episodes


def test_an_unknown_skill_or_split_is_one_line_and_a_nonzero_exit():
    for args in (["--skills", "no-such-skill"], ["--splits", "ood:nowhere"]):
        r = _run(*args)
        assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
        assert r.stderr.startswith("error: unknown")
