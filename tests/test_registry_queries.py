"""Query commands stay torch-free (and SQLAlchemy-free: registry/reader.py), and their renderings
say what they should."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, cli_argv
from registry.records import NewLearnRun, NewScore
from registry.render import format_alpha, lineage_dot, lineage_mermaid, lineage_tree
from registry.stats import wilson_interval

PROBE = """
import runpy, sys, json
sys.argv = ["retain", *json.loads(sys.argv[1])]
try:
    runpy.run_path({cli!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "retain", "numpy", "alembic", "sqlalchemy", "matplotlib") if m in sys.modules)
print("MODULES " + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


@pytest.fixture
def small_history(registry, make_checkpoint):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    for i, (skill, mode) in enumerate([("plates", "task-ft"), ("whiteboard", "co-ft")], start=1):
        run = NewLearnRun(skill=skill, demo_set_id=None, recipe={"mode": mode}, delta_dir=None, alpha={"vision": 1.0, "language": 0.5 + i / 10},
                          sweep=[], timings={})
        registry.commit_version(make_checkpoint(f"{skill}.safetensors", seed=i), parent=f"v{i - 1}", how="learn",
                                expected_head=f"v{i - 1}", learn_run=run, scores=[NewScore(skill, "id", 8, 10, "e")])
    registry.rollback("v1", reason="whiteboard hurt plates")
    run = NewLearnRun(skill="mugs-on-plates", demo_set_id=None, recipe={"mode": "external"}, delta_dir=None, alpha=0.75, sweep=[], timings={})
    registry.commit_version(make_checkpoint("mugs.safetensors", seed=7), parent="v1", how="learn", expected_head="v1", learn_run=run)
    return registry


@pytest.mark.parametrize("args", [["lineage"], ["lineage", "--format", "dot"], ["lineage", "--json"], ["scores"], ["scores", "v1"],
                                  ["log"], ["log", "--json"], ["show", "v2"]])
def test_query_commands_import_neither_torch_nor_sqlalchemy(small_history, args):
    argv = cli_argv(small_history, *args)
    probe = PROBE.format(cli=str(ROOT / "cli.py"))
    r = subprocess.run([sys.executable, "-c", probe, json.dumps(argv[2:])], capture_output=True, text=True, timeout=120)
    assert "MODULES " in r.stderr, r.stderr
    info = json.loads(r.stderr.rsplit("MODULES ", 1)[1])
    assert info["code"] in (0, None), r.stderr
    assert info["heavy"] == [], f"{args} imported {info['heavy']}"


def test_lineage_tree_branches_and_chains(small_history):
    text = lineage_tree(small_history.lineage())
    lines = text.splitlines()
    assert lines[0].startswith("○ v0  base-import")
    assert lines[1].startswith("● v1  learn  plates task-ft alpha vision=1,language=0.6")
    assert lines[2].startswith("├─● v2  learn  whiteboard co-ft alpha vision=1,language=0.7")
    assert lines[3].startswith("● v3  learn  mugs-on-plates external alpha 0.75  [main]")


def test_lineage_tree_draws_two_roots_a_branch_from_an_earlier_version_and_a_replay(registry, make_checkpoint):
    """v0 -> v1 -> v2 -> v3, a branch v4 from v1 (after v2 and v3 exist), a replay v5 of v3 from v4,
    and a second root v6: every version is drawn under its own parent."""
    def learn(skill, parent, seed, how="learn", ref="main"):
        run = NewLearnRun(skill=skill, demo_set_id=None, recipe={"mode": "task-ft"}, delta_dir=None, alpha=0.5, sweep=[], timings={})
        head = registry.head(ref)
        return registry.commit_version(make_checkpoint(f"{skill}-{seed}.safetensors", seed=seed), parent=parent, how=how, ref=ref,
                                       expected_head=head.name if head else None, learn_run=run)

    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    learn("plates", "v0", 1)
    learn("whiteboard", "v1", 2)
    learn("pot", "v2", 3)
    learn("mugs", "v1", 4, ref="side")
    learn("pot", "v4", 5, how="replay", ref="side")
    registry.import_base(make_checkpoint("other.safetensors", seed=6), ref="other")
    lines = [ln.split("  20")[0] for ln in lineage_tree(registry.lineage()).splitlines()]
    assert lines == [
        "○ v0  base-import",
        "● v1  learn  plates task-ft alpha 0.5",
        "├─● v2  learn  whiteboard task-ft alpha 0.5",
        "│ ● v3  learn  pot task-ft alpha 0.5  [main]",
        "● v4  learn  mugs task-ft alpha 0.5",
        "● v5  replay  pot task-ft alpha 0.5  [side]",
        "○ v6  base-import  [other]",
    ]


def test_dot_and_mermaid_name_every_edge(small_history):
    lin = small_history.lineage()
    dot = lineage_dot(lin)
    assert '"v1" -> "v2" [label="whiteboard co-ft alpha vision=1,language=0.7"]' in dot
    assert '"ref:main" -> "v3" [style=dashed]' in dot
    mer = lineage_mermaid(lin)
    assert 'v1 -->|"mugs-on-plates external alpha 0.75"| v3' in mer and 'ref_main(["main"]) -.-> v3' in mer


def test_lineage_cli_shows_each_edge_mode_in_text_and_json(small_history, cli):
    text = cli("lineage").output
    assert "v1  learn  plates task-ft alpha vision=1,language=0.6" in text
    assert "v3  learn  mugs-on-plates external alpha 0.75  [main]" in text
    edges = json.loads(cli("lineage", "--json").output)["edges"]
    assert [(e["child"], e["skill"], e["mode"], e["alpha"]) for e in edges] == [
        ("v1", "plates", "task-ft", {"vision": 1.0, "language": 0.6}), ("v2", "whiteboard", "co-ft", {"vision": 1.0, "language": 0.7}),
        ("v3", "mugs-on-plates", "external", 0.75)]
    assert "  mode      co-ft" in cli("show", "v2").output


def test_an_edge_without_a_recorded_mode_shows_skill_and_alpha(registry, make_checkpoint):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    run = NewLearnRun(skill="plates", demo_set_id=None, recipe={}, delta_dir=None, alpha=0.5, sweep=[], timings={})
    registry.commit_version(make_checkpoint("plates.safetensors", seed=1), parent="v0", how="learn", expected_head="v0", learn_run=run)
    lin = registry.lineage()
    assert lin.edges[0].mode is None and registry.learn_runs()[0].mode is None
    assert lineage_tree(lin).splitlines()[1].startswith("● v1  learn  plates alpha 0.5  [main]")


def test_scores_json(small_history, cli):
    got = json.loads(cli("scores", "v1", "--json").output)
    assert [(s["skill"], s["split"], s["successes"], s["episodes"], s["rate"]) for s in got] == [("plates", "id", 8, 10, 0.8)]
    assert "no scores for v3 yet" in cli("scores").output


def test_format_alpha():
    assert format_alpha(0.5) == "0.5" and format_alpha({"language": 0.8, "vision": 1.0}) == "language=0.8,vision=1"


def test_wilson_interval_known_values():
    low, high = wilson_interval(10, 20)
    assert (round(low, 4), round(high, 4)) == (0.2993, 0.7007)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(0, 10)
    assert round(high, 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("fmt", ["dot", "mermaid", "tree"])
def test_lineage_refuses_json_with_another_format(small_history, cli, fmt):
    r = cli("lineage", "--format", fmt, "--json")
    assert r.exit_code == 4 and r.output.startswith("Error: --json prints JSON and --format") and r.output.count("\n") == 1
    assert json.loads(cli("lineage", "--format", "json", "--json").output) == json.loads(cli("lineage", "--json").output)
