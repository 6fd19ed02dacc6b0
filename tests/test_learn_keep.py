"""`learn` with the lineage in view, end to end on a tiny real policy and the real simulator:
--keep's bad input (one line, nothing committed), exit 5 when no candidate meets it, --force,
the soft default, the recorded table, and a replay of such a chain bit for bit."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import registry_state, tiny_registry

# Tiny and fast, the broad strategy over one grid value (4 candidates), the checks at 2 episodes.
FAST = ["--steps", "8", "--batch-size", "8", "-n", "2", "--demo-episodes", "4", "--no-compare", "-q",
        "--alpha-grid", "0.5", "--keep-episodes", "2"]


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """A tiny registry whose main learned plates (v1)."""
    root = tmp_path_factory.mktemp("keep")
    reg = tiny_registry(root)
    home = str(root / "home")
    r = run(home, "learn", "plates", *FAST, "--keep", "none")
    assert r.exit_code == 0, r.output
    yield reg, home
    reg.close()


def run(home: str, *args: str):
    return CliRunner().invoke(root_cli, ["--home", home, *args], catch_exceptions=False)


@pytest.mark.parametrize("keep, code, message", [
    (["mugs-on-plates>=0.5"], 4, "--keep names 'mugs-on-plates', which is not a skill of this lineage (earlier skills: plates)"),
    (["plates>=1.5"], 4, "the success rate 1.5 is outside [0, 1]"),
    (["generalist>=2x"], 4, "the share of the parent's score 2 is outside [0, 1]"),
    (["plates>0.5"], 4, "only '>=' is supported"),
    (["plates>=lots"], 4, "threshold 'lots' is not a number"),
    (["plates>=0.5", "plates>=0.6"], 4, "contradict each other"),
    (["none", "generalist>=0.8x"], 4, "--keep none contradicts"),
])
def test_bad_keep_is_one_line_and_commits_nothing(plates, keep, code, message):
    reg, home = plates
    before = registry_state(reg)
    r = run(home, "learn", "whiteboard", *FAST, *[a for k in keep for a in ("--keep", k)])
    assert r.exit_code == code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.output
    assert registry_state(reg) == before


def test_keep_with_a_fixed_alpha_is_refused(plates):
    reg, home = plates
    r = run(home, "learn", "whiteboard", *FAST, "--keep", "plates>=0.5", "--alpha", "0.5")
    assert r.exit_code == 4 and "--keep checks candidates of the alpha search" in r.output


def test_no_candidate_meeting_the_constraints_stops_with_exit_5_then_force_commits(plates):
    reg, home = plates
    before = registry_state(reg)
    # plates scores 0% on the tiny policy, so 100% of it is out of every candidate's reach
    r = run(home, "learn", "whiteboard", *FAST, "--keep", "plates>=1")
    assert r.exit_code == 5, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(err) == 1 and "plates 0% (needs 100%)" in err[0]
    for option in ("--rehearse SHARE", "--mode co-ft", "a looser --keep", "--force"):
        assert option in err[0]
    assert "what alpha" in r.output and "plates>=1: NOT met (needs 100%)" in r.output  # the table came first
    assert registry_state(reg) == before

    r = run(home, "learn", "whiteboard", *FAST, "--keep", "plates>=1", "--force", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    check = doc["lineage_check"]
    assert check["keep"] == "plates>=1 new>=0.8x" and check["force"] and not check["met"] and "(--force)" in check["reason"]
    assert [row["target"] for row in check["table"]] == ["plates", "whiteboard (new)"] and check["table"][0]["ok"] is False
    assert check["candidates"][0]["role"] == "parent" and len(check["candidates"]) == 5  # the parent and 4 candidates
    recipe = reg.learn_run_for(doc["version"]["name"]).recipe
    assert recipe["lineage_check"] == check and recipe["keep"] == ["plates>=1"] and recipe["strategy"] == "broad"


def test_the_default_checks_every_earlier_skill_and_the_suite_and_replays_bit_for_bit(plates):
    reg, home = plates
    assert run(home, "rollback", "v1", "-m", "try the default").exit_code == 0
    r = run(home, "learn", "whiteboard", *FAST, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    check = doc["lineage_check"]
    assert check["keep"] == "all>=0.8x new>=0.8x" and check["keep_default"] and check["episodes"] == 2
    assert [row["target"] for row in check["table"]] == ["plates", "generalist", "whiteboard (new)"]
    assert all(row["candidate"] is not None for row in check["table"])  # the chosen candidate was checked
    assert doc["alpha"] == check["alpha"]
    r = run(home, "replay", "whiteboard")
    assert r.exit_code == 0 and "reproduced every recorded weight hash bit for bit" in r.output, r.output
