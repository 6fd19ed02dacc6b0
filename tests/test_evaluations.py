"""Every evaluation is kept; each figure shows the one with the most episodes (ties: the earliest)
and says which evaluation it comes from. On SQLite and PostgreSQL, and through the CLI."""
from __future__ import annotations

import json

from click.testing import CliRunner

from cli import cli as root
from registry.evaluations import describe
from registry.records import NewLearnRun, NewScore


def _learned(registry, make_checkpoint):
    """v1 learned plates: learn's own evaluation (50 episodes, seed 12345) of plates ID and the suite."""
    registry.import_base(make_checkpoint("base.safetensors", seed=0), name="tiny")
    run = NewLearnRun(skill="plates", demo_set_id=None, recipe={"mode": "task-ft"}, delta_dir=None, alpha=0.5, sweep=[], timings={})
    registry.commit_version(make_checkpoint("v1.safetensors", seed=1), parent="v0", how="learn", expected_head="v0", learn_run=run,
                            scores=[NewScore("plates", "id", 40, 50, "sim-v1", 12345), NewScore(None, "generalist", 10, 50, "sim-v1", 12345)])


def test_a_few_episodes_do_not_replace_what_learn_measured(registry, make_checkpoint, cli):
    _learned(registry, make_checkpoint)
    registry.record_scores("v1", [NewScore(None, "generalist", 2, 3, "sim-v1", 0)])  # `retain eval v1 -n 3`
    shown = {(s.skill, s.split): s for s in registry.scores("v1")}
    assert (shown[(None, "generalist")].successes, shown[(None, "generalist")].episodes, shown[(None, "generalist")].seed) == (10, 50, 12345)
    every = registry.scores("v1", every=True)
    assert sorted((s.successes, s.episodes, s.seed) for s in every if s.skill is None) == [(2, 3, 0), (10, 50, 12345)]

    registry.record_scores("v1", [NewScore(None, "generalist", 33, 200, "sim-v1", 7)])  # more evidence does replace it
    g = [s for s in registry.scores("v1") if s.skill is None]
    assert [(s.successes, s.episodes, s.seed) for s in g] == [(33, 200, 7)]
    registry.record_scores("v1", [NewScore(None, "generalist", 99, 200, "sim-v1", 8)])  # a tie keeps the earlier
    assert [(s.successes, s.episodes) for s in registry.scores("v1") if s.skill is None] == [(33, 200)]

    text = cli("scores", "v1").output
    assert "12345" in text and "each figure: the evaluation with the most episodes (ties: the earliest)" in text
    assert "2/3" not in text
    text = cli("scores", "v1", "--all").output
    starred = [line for line in text.splitlines() if line.startswith("*")]
    assert len(starred) == 2 and any("33/200" in line for line in starred) and any("2/3" in line for line in text.splitlines())
    rows = json.loads(cli("scores", "v1", "--json").output)
    assert {(r["skill"], r["episodes"], r["seed"]) for r in rows} == {("plates", 50, 12345), (None, 200, 7)}
    report = cli("scores", "--ref", "main").output
    assert "figures from (the evaluation with the most episodes" in report
    assert "v1: 1 figure from sim-v1, seed 12345, 50 episodes" in report and "v1: 1 figure from sim-v1, seed 7, 200 episodes" in report
    cells = json.loads(cli("scores", "--ref", "main", "--json").output)["rows"]
    generalist = next(r for r in cells if r["skill"] is None)["cells"]["v1"]
    assert generalist["episodes"] == 200 and generalist["source"].startswith("sim-v1, seed 7, 200 episodes")
    res = cli("scores", "--ref", "main", "--all")
    assert res.exit_code == 4 and "--all lists the evaluations of one version" in res.output


def test_scores_recorded_without_a_seed_say_so(registry, make_checkpoint):
    _learned(registry, make_checkpoint)
    registry.record_scores("v1", [NewScore("plates", "ood:position", 5, 60, "sim-v1")])
    s = next(s for s in registry.scores("v1") if s.split == "ood:position")
    assert s.seed is None and describe(s).startswith("sim-v1, seed not recorded, 60 episodes, ")


def test_a_bad_seed_is_refused_and_nothing_is_recorded(registry, make_checkpoint):
    import pytest

    from registry.errors import RegistryError

    _learned(registry, make_checkpoint)
    with pytest.raises(RegistryError, match="score seed -1"):
        registry.record_scores("v1", [NewScore("plates", "id", 1, 2, "x", 3), NewScore("plates", "id", 1, 2, "x", -1)])
    assert len(registry.scores("v1", every=True)) == 2


def test_eval_with_few_episodes_says_the_figure_it_leaves_in_place(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")

    def run(*args):
        return runner.invoke(root, ["--home", home, *args], catch_exceptions=False)

    run("init")
    version = json.loads(run("pretrain", "--config", "tiny", "--episodes", "12", "--steps", "5", "--seed", "1", "--json").output)["version"]
    res = run("eval", version, "--split", "generalist", "-n", "4", "--seed", "5")
    assert res.exit_code == 0 and "note:" not in res.output, res.output
    res = run("eval", version, "--split", "generalist", "-n", "2", "--seed", "6")
    assert res.exit_code == 0, res.output
    assert f"note: {version} generalist generalist still shows" in res.output and "seed 5, 4 episodes" in res.output
    rows = json.loads(run("scores", version, "--json").output)
    assert [(r["episodes"], r["seed"]) for r in rows] == [(4, 5)]
    assert len(json.loads(run("scores", version, "--all", "--json").output)) == 2
