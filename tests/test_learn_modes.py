"""co-finetuning (pretraining data regenerated from the base's recipe) and DDP finetunes inside `learn`,
each replayed bit for bit."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import FAST_CLI, fast_options
from retain.learn import learn
from retain.replay import replay


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A registry whose base was made by `retain pretrain --config tiny` (it records its data recipe)."""
    from registry.api import Registry

    root = tmp_path_factory.mktemp("modes")
    home = str(root / "home")
    r = CliRunner().invoke(root_cli, ["--home", home, "init"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(root_cli, ["--home", home, "pretrain", "--config", "tiny", "--episodes", "12", "--steps", "5", "--json"])
    assert r.exit_code == 0, r.output
    reg = Registry.open(home=home)
    yield reg, home
    reg.close()


def test_co_ft_mixes_regenerated_pretraining_data_and_replays(pretrained):
    reg, _ = pretrained
    res = learn(reg, "plates", fast_options(mode="co-ft", mix=0.5, pretrain_episodes=6, alpha="0.5"))
    run = reg.learn_run_for(res.version.name)
    assert (run.recipe["mode"], run.recipe["mix"]) == ("co-ft", 0.5)
    assert "pretrain_data" in run.timings
    check = replay(reg, ["plates"], of=res.version.name)
    assert check.reproduced, check


@pytest.mark.slow
def test_learn_under_torchrun_with_two_processes_replays_bit_for_bit(pretrained):
    reg, home = pretrained
    r = CliRunner().invoke(root_cli, ["--home", home, "learn", "whiteboard", *FAST_CLI, "--alpha", "0.5", "--nproc-per-node", "2"])
    assert r.exit_code == 0, r.output
    head = reg.head()
    assert reg.learn_run_for(head.name).recipe["nproc"] == 2
    check = replay(reg, ["whiteboard"], of=head.name)
    assert check.reproduced and check.checks[0].finetune == "reproduced"


def test_rehearsal_mixes_the_earlier_skills_stored_demos_and_replays(tmp_path):
    from learn_support import registry_state, tiny_registry
    from registry.errors import RegistryError

    reg = tiny_registry(tmp_path)
    try:
        before = registry_state(reg)
        with pytest.raises(RegistryError, match="no skill with stored demos was learned along v0's history"):
            learn(reg, "plates", fast_options(rehearse=0.25, alpha="0.5"))
        assert registry_state(reg) == before
        plates = learn(reg, "plates", fast_options(alpha="0.5"))
        with pytest.raises(RegistryError, match="--rehearse shapes the finetune, and --finetuned"):
            learn(reg, "whiteboard", fast_options(rehearse=0.25, alpha="0.5"), finetuned=str(tmp_path / "base-weights"))
        white = learn(reg, "whiteboard", fast_options(rehearse=0.25, alpha="0.5"))
        run = reg.learn_run_for(white.version.name)
        folder = reg.demo_set(plates.demo_set_id).folder
        assert run.recipe["rehearse"] == 0.25
        assert run.recipe["rehearsed"] == [{"skill": "plates", "demo_set": plates.demo_set_id, "folder": folder}]
        assert "rehearsal_data" in run.timings
        check = replay(reg, ["plates", "whiteboard"], of=white.version.name)
        assert check.reproduced and [c.finetune for c in check.checks] == ["reproduced", "reproduced"]
        # another alpha reuses the recorded finetune, and its record still says what that finetune rehearsed
        rebuilt = replay(reg, ["whiteboard"], of=white.version.name, alpha="0.75")
        assert rebuilt.steps[0].new.recipe["rehearsed"] == run.recipe["rehearsed"]
    finally:
        reg.close()


def test_replay_with_rehearse_rebuilds_the_chain_rehearsing_what_came_before(tmp_path):
    from learn_support import registry_state, tiny_registry
    from registry.errors import RegistryError

    reg = tiny_registry(tmp_path)
    try:
        plates = learn(reg, "plates", fast_options(alpha="0.5"))
        white = learn(reg, "whiteboard", fast_options(alpha="0.5"))
        before = registry_state(reg)
        with pytest.raises(RegistryError, match="nothing with stored demos was learned before plates along v0's history"):
            replay(reg, ["plates"], of=plates.version.name, rehearse=0.25)
        with pytest.raises(RegistryError, match=r"--rehearse 1.5 is outside \[0, 1\)"):
            replay(reg, ["plates", "whiteboard"], rehearse=1.5)
        assert registry_state(reg) == before
        said: list[str] = []
        res = replay(reg, ["plates", "whiteboard"], of=white.version.name, rehearse=0.25, branch="rehearsed", say=said.append)
        assert res.changes == {"rehearse": 0.25} and res.branch == "rehearsed"
        first, second = res.steps
        # plates has nothing before it on the bare base: its recorded finetune is reused, so the merge is the same bytes
        assert any("nothing was learned before plates on v0" in line for line in said)
        assert first.new.recipe["rehearse"] == 0 and first.new.weight_hash == plates.version.weight_hash
        run = reg.learn_run_for(second.new.name)
        folder = reg.demo_set(plates.demo_set_id).folder
        assert run.recipe["rehearse"] == 0.25 and run.recipe["replay_changes"] == {"rehearse": 0.25}
        assert run.recipe["rehearsed"] == [{"skill": "plates", "demo_set": plates.demo_set_id, "folder": folder}]
        assert second.new.weight_hash != white.version.weight_hash
        # the rebuilt chain is itself a recorded chain: replaying it reproduces every step bit for bit
        check = replay(reg, ["plates", "whiteboard"], of=second.new.name)
        assert check.reproduced and [c.finetune for c in check.checks] == ["reproduced", "reproduced"]
    finally:
        reg.close()


def test_learn_cli_takes_rehearse_and_refuses_a_share_out_of_range(tmp_path):
    from learn_support import tiny_registry

    reg = tiny_registry(tmp_path)
    reg.close()
    home = str(tmp_path / "home")
    r = CliRunner().invoke(root_cli, ["--home", home, "learn", "plates", *FAST_CLI, "--rehearse", "1.5"])
    assert r.exit_code != 0 and "--rehearse 1.5 is outside [0, 1)" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(root_cli, ["--home", home, "learn", "plates", *FAST_CLI, "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(root_cli, ["--home", home, "learn", "whiteboard", *FAST_CLI, "--alpha", "0.5", "--rehearse", "0.25", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(root_cli, ["--home", home, "replay", "plates,whiteboard", "-q", "--rehearse", "0.5"])
    assert r.exit_code == 0 and "(rehearse=0.5)" in r.output, r.output
    r = CliRunner().invoke(root_cli, ["--home", home, "replay", "plates", "-q", "--rehearse", "0.5"])
    assert r.exit_code != 0 and "nothing with stored demos was learned before plates" in r.output and "Traceback" not in r.output
