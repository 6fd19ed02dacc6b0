"""The continual-learning matrix and summary over real score records (registry.records.Score)."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from registry.continual import (
    HistoryStep, continual_summary, format_matrix, format_summary, history_along, score_matrix,
)
from registry.errors import RegistryError
from registry.records import Lineage, LineageEdge, Score, Version
from registry.stats import wilson_interval

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def score(version, skill, split, successes, episodes, minute=0):
    low, high = wilson_interval(successes, episodes)
    return Score(version, skill, split, successes, episodes, successes / episodes, low, high, "sim", T0 + dt.timedelta(minutes=minute))


def version(name, parent):
    return Version(name, int(name[1:]), parent, "sha256:" + "0" * 64, "learn", T0, {}, {}, "")


HISTORY = [HistoryStep("v0", None), HistoryStep("v1", "plates"), HistoryStep("v2", "whiteboard")]
SCORES = [
    score("v0", None, "generalist", 80, 100),
    score("v1", None, "generalist", 70, 100),
    score("v2", None, "generalist", 60, 100),
    score("v1", "plates", "id", 90, 100),
    score("v1", "plates", "ood:position", 50, 100),
    score("v1", "plates", "ood:object", 30, 100),
    score("v2", "plates", "id", 70, 100),
    score("v2", "plates", "ood:position", 40, 100),
    score("v2", "plates", "ood:object", 30, 100),
    score("v2", "whiteboard", "id", 85, 100),
    score("v2", "whiteboard", "ood:position", 45, 100),
    score("v9", "plates", "id", 1, 100),  # off this history: ignored
]


def test_matrix_rows_follow_learning_order_and_ignore_other_versions():
    m = score_matrix(HISTORY, SCORES)
    assert m.versions == ["v0", "v1", "v2"]
    assert m.learned == {"v1": "plates", "v2": "whiteboard"}
    assert [(r.skill, r.split) for r in m.rows] == [
        ("plates", "id"), ("plates", "ood:object"), ("plates", "ood:position"),
        ("whiteboard", "id"), ("whiteboard", "ood:position"), (None, "generalist"),
    ]
    plates_id = m.rows[0]
    assert set(plates_id.cells) == {"v1", "v2"}
    cell = plates_id.cells["v1"]
    assert cell.rate == pytest.approx(0.9) and (cell.low, cell.high) == pytest.approx(wilson_interval(90, 100))


def test_a_smaller_reevaluation_does_not_replace_the_figure_a_larger_one_does():
    m = score_matrix(HISTORY, SCORES + [score("v2", "plates", "id", 3, 3, minute=5)])
    assert m.rows[0].cells["v2"].successes == 70  # 100 episodes beat 3
    assert "100 episodes" in m.rows[0].cells["v2"].source
    m = score_matrix(HISTORY, SCORES + [score("v2", "plates", "id", 150, 200, minute=5)])
    assert (m.rows[0].cells["v2"].successes, m.rows[0].cells["v2"].episodes) == (150, 200)
    m = score_matrix(HISTORY, SCORES + [score("v2", "plates", "id", 20, 100, minute=5)])
    assert m.rows[0].cells["v2"].successes == 70  # a tie in episodes keeps the earlier figure


def test_summary_forgetting_backward_transfer_and_retention():
    s = continual_summary(HISTORY, SCORES, ref="main")
    assert (s.base, s.head) == ("v0", "v2")
    plates, white = s.skills
    assert (plates.skill, plates.learned_at) == ("plates", "v1")
    assert plates.id_forgetting == pytest.approx(0.2)
    # OOD pooled over both families: (50+30)/200 -> (40+30)/200
    assert plates.ood_families == ["ood:object", "ood:position"]
    assert plates.ood_forgetting == pytest.approx(0.05)
    assert white.id_forgetting == pytest.approx(0.0)
    # backward transfer counts only skills learned before the latest (here: plates)
    assert s.backward_transfer_id == pytest.approx(-0.2)
    assert s.backward_transfer_ood == pytest.approx(-0.05)
    assert s.generalist_retention == pytest.approx(0.75)
    d = s.to_dict()
    assert d["generalist_retention"] == pytest.approx(0.75) and d["skills"][0]["id_forgetting"] == pytest.approx(0.2)


def test_kept_against_the_best_recorded_figure():
    s = continual_summary(HISTORY, SCORES, ref="main")
    plates = s.skills[0]
    assert (plates.id_best_at, plates.id_best.rate) == ("v1", pytest.approx(0.9))
    assert (plates.ood_best_at, plates.ood_best.successes, plates.ood_best.episodes) == ("v1", 80, 200)
    assert (s.generalist_best_at, s.generalist_best.rate) == ("v0", pytest.approx(0.8))
    text = format_summary(s)
    assert "kept against the best recorded figure along main:" in text
    assert "plates ID: best 90% [83-94] at v1 -> now 70% [60-78] (kept 78%, -20.0 pts)" in text
    assert "generalist: best 80% [71-87] at v0 -> now 60% [50-69] (kept 75%, -20.0 pts)" in text


def test_one_skill_has_no_backward_transfer_and_missing_scores_stay_none():
    s = continual_summary(HISTORY[:2], [score("v1", "plates", "id", 5, 10)])
    assert s.backward_transfer_id is None
    assert s.skills[0].ood_after is None and s.generalist_retention is None
    assert "no scores" in format_matrix(score_matrix(HISTORY, []))


def test_relearned_skill_counts_from_its_latest_learning():
    hist = HISTORY + [HistoryStep("v3", "plates")]
    s = continual_summary(hist, SCORES + [score("v3", "plates", "id", 95, 100)])
    assert [p.skill for p in s.skills] == ["whiteboard", "plates"]
    assert s.skills[1].learned_at == "v3"


def test_history_along_follows_parents_from_the_ref():
    lineage = Lineage(
        versions=[version("v0", None), version("v1", "v0"), version("v2", "v1"), version("v3", "v1")],
        edges=[LineageEdge("v0", "v1", "learn", "plates", "task-ft", 0.5), LineageEdge("v1", "v2", "learn", "whiteboard", "co-ft", 0.5),
               LineageEdge("v1", "v3", "replay", "whiteboard", "co-ft", 0.25)],
        refs={"main": "v2", "exp": "v3"},
    )
    assert history_along(lineage, "exp") == [HistoryStep("v0", None), HistoryStep("v1", "plates"), HistoryStep("v3", "whiteboard")]
    with pytest.raises(RegistryError, match="ref 'nope' does not exist"):
        history_along(lineage, "nope")


def test_text_shows_every_version_and_the_summary_lines():
    text = format_matrix(score_matrix(HISTORY, SCORES))
    assert "v1 (+plates)" in text and "90% [" in text
    summary = format_summary(continual_summary(HISTORY, SCORES))
    assert "forgetting +20.0 pts" in summary and "retention 75%" in summary


def test_report_round_trips_through_json():
    import json

    from registry.continual import report_dict, report_text

    m, s = score_matrix(HISTORY, SCORES), continual_summary(HISTORY, SCORES)
    doc = json.loads(json.dumps(report_dict(m, s)))
    assert doc["versions"] == ["v0", "v1", "v2"] and doc["summary"]["generalist_retention"] == pytest.approx(0.75)
    assert doc["rows"][0]["cells"]["v1"]["successes"] == 90
    assert "backward transfer" in report_text(m, s)


def test_importing_continual_pulls_no_torch():
    code = "import sys, registry.continual; assert 'torch' not in sys.modules and 'retain' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _filled_registry(tmp_path):
    """A registry (SQLite, torch-free) with a base and plates then whiteboard learned on it, with scores."""
    import numpy as np

    from registry.api import Registry
    from registry.checkpoint import save_tensors
    from registry.records import NewLearnRun, NewScore

    def weights(seed):
        a = np.random.default_rng(seed).standard_normal(4).astype("<f4")
        return save_tensors(tmp_path / f"w{seed}.safetensors", {"x": ("F32", (4,), a.tobytes())})

    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        reg.import_base(weights(0))
        reg.record_scores("v0", [NewScore(None, "generalist", 8, 10, "sim")])
        for i, (skill, sid, gen) in enumerate((("plates", 9, 7), ("whiteboard", 8, 6)), start=1):
            run = NewLearnRun(skill, None, {"mode": "task-ft"}, None, 0.5, [], {})
            reg.commit_version(weights(i), parent=f"v{i - 1}", how="learn", expected_head=f"v{i - 1}", learn_run=run,
                               scores=[NewScore(skill, "id", sid, 10, "sim"), NewScore(None, "generalist", gen, 10, "sim")]
                               + ([NewScore("plates", "id", 5, 10, "sim")] if skill == "whiteboard" else []))
    return tmp_path / "home"


def test_continual_scores_from_a_real_registry(tmp_path):
    """Versions, learn runs and scores committed through the registry API, read back torch-free."""
    from registry.api import Registry
    from registry.continual import continual_scores

    with Registry.open(home=str(_filled_registry(tmp_path))) as reg:
        matrix, summary = continual_scores(reg, "main")
    assert matrix.versions == ["v0", "v1", "v2"] and matrix.learned == {"v1": "plates", "v2": "whiteboard"}
    assert summary.skills[0].id_forgetting == pytest.approx(0.4)
    assert summary.backward_transfer_id == pytest.approx(-0.4)
    assert summary.generalist_retention == pytest.approx(0.75)


def test_scores_ref_prints_the_matrix_and_summary(tmp_path):
    """`retain scores --ref main` (the lean reader) over the same registry."""
    import json

    from click.testing import CliRunner

    from cli import cli as root_cli

    home = _filled_registry(tmp_path)

    def run(*args):
        return CliRunner().invoke(root_cli, ["--home", str(home), *args], catch_exceptions=False)

    r = run("scores", "--ref", "main")
    assert r.exit_code == 0, r.output
    assert "v2 (+whiteboard)" in r.output and "retention 75%" in r.output and "backward transfer: ID -40.0 pts" in r.output
    doc = json.loads(run("scores", "--ref", "main", "--json").output)
    assert doc["versions"] == ["v0", "v1", "v2"] and doc["summary"]["generalist_retention"] == pytest.approx(0.75)
    bad = run("scores", "--ref", "nope")
    assert bad.exit_code == 9 and bad.output.startswith("Error: ref 'nope' does not exist")
    both = run("scores", "v1", "--ref", "main")
    assert both.exit_code == 4 and "not both" in both.output
