"""benchmarks/chains_summary.py: the matrix's figures read from each run's `scores --ref main --json`."""
from __future__ import annotations

import json

import pytest

from benchmarks.chains_summary import collect, figures, main, means


def _scores(plates_id, plates_ood, white_id, white_ood, generalist):
    def cell(rate):
        return {"successes": int(rate * 50), "episodes": 50, "rate": rate}

    return {"summary": {"skills": [
        {"skill": "plates", "id_now": cell(plates_id), "ood_now": cell(plates_ood)},
        {"skill": "whiteboard", "id_now": cell(white_id), "ood_now": cell(white_ood)}],
        "generalist_now": cell(generalist)}}


def _run(root, config, seed, scores=None):
    d = root / f"{config}-s{seed}"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"config": config, "seed": seed, "seconds": 10}))
    if scores is not None:
        (d / "scores.json").write_text(json.dumps(scores))


def test_figures_means_and_failed_runs(tmp_path, capsys):
    _run(tmp_path, "old", 0, _scores(0.0, 0.02, 0.8, 0.6, 0.04))
    _run(tmp_path, "old", 1, _scores(0.1, 0.04, 0.6, 0.4, 0.08))
    _run(tmp_path, "new", 0)  # failed: no scores
    assert figures(_scores(0.0, 0.02, 0.8, 0.6, 0.04))["whiteboard_ood"] == 0.6
    runs = collect(tmp_path)
    assert [(r["config"], r["seed"], r["failed"]) for r in runs] == [("new", 0, True), ("old", 0, False), ("old", 1, False)]
    avg = means(runs)
    assert set(avg) == {"old"} and avg["old"]["seeds"] == [0, 1]
    assert avg["old"]["plates_id"] == pytest.approx(0.05) and avg["old"]["generalist"] == pytest.approx(0.06)
    assert main([str(tmp_path)]) == 0
    assert "| **old** mean | 0,1 | 5.0% |" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["means"]["old"]["whiteboard_id"] == pytest.approx(0.7)
    assert "failed" in capsys.readouterr().out
