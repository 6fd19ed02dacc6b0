"""Imports that would move a ref somewhere a user does not expect say so, and need --force."""
from __future__ import annotations

import pytest

from registry.errors import Code, RegistryError
from registry.records import NewLearnRun


def _learn(registry, make_checkpoint, parent: str, seed: int, ref: str = "main"):
    run = NewLearnRun(skill="plates", demo_set_id=None, recipe={}, delta_dir=None, alpha=0.5, sweep=[], timings={})
    return registry.commit_version(make_checkpoint(f"l{seed}.safetensors", seed=seed), parent=parent, how="learn", ref=ref,
                                   expected_head=registry.head(ref).name, learn_run=run)


def test_importing_the_same_weights_again_commits_nothing_or_needs_force(registry, make_checkpoint, cli):
    base = make_checkpoint("base.safetensors", seed=0)
    first = cli("base", "import", str(base))
    assert first.exit_code == 0 and "main -> v0 (a new ref)" in first.output
    again = cli("base", "import", str(base))
    assert again.exit_code == 0 and "main is already at v0, which holds these weights; nothing was imported" in again.output
    elsewhere = cli("base", "import", str(base), "--ref", "other")
    assert elsewhere.exit_code == Code.ALREADY_EXISTS.value
    assert elsewhere.output.startswith("Error: v0 (at main) already holds these weights") and "--force" in elsewhere.output
    assert [v.name for v in registry.versions()] == ["v0"] and registry.head("other") is None
    forced = cli("base", "import", str(base), "--ref", "other", "--force")
    assert forced.exit_code == 0 and "other -> v1" in forced.output


def test_a_ref_heading_a_learned_chain_is_not_moved_onto_a_new_root_without_force(registry, make_checkpoint, cli):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    _learn(registry, make_checkpoint, "v0", 1)
    other = make_checkpoint("other.safetensors", seed=9)
    r = cli("base", "import", str(other))
    assert r.exit_code == Code.INVALID_STATE.value and r.output.count("\n") == 1
    assert "main is at v1 (learn on v0); a new base there would move main off that chain" in r.output
    assert "--ref NAME" in r.output and "--force" in r.output
    assert registry.head("main").name == "v1" and len(registry.versions()) == 2
    ok = cli("base", "import", str(other), "--ref", "pi0")
    assert ok.exit_code == 0 and "pi0 -> v2 (a new ref)" in ok.output and registry.head("main").name == "v1"
    moved = cli("base", "import", str(make_checkpoint("third.safetensors", seed=8)), "--force")
    assert moved.exit_code == 0 and "main: v1 -> v3 (a new root; v1 stays" in moved.output


def test_moving_a_ref_from_one_base_to_another_is_allowed_and_said(registry, make_checkpoint, cli):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    r = cli("base", "import", str(make_checkpoint("b2.safetensors", seed=2)))
    assert r.exit_code == 0 and "main: v0 -> v1 (a new root; v0 stays" in r.output


def test_the_api_refuses_the_same(registry, make_checkpoint):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    _learn(registry, make_checkpoint, "v0", 1)
    with pytest.raises(RegistryError) as e:
        registry.import_base(make_checkpoint("x.safetensors", seed=5))
    assert e.value.code is Code.INVALID_STATE
    with pytest.raises(RegistryError) as e:
        registry.check_base_import("main")
    assert registry.check_base_import("main", force=True).name == "v1"
    assert registry.check_base_import("fresh") is None


def test_pretrain_shipped_twice_makes_one_root_and_a_training_pretrain_refuses_before_it_trains(tmp_path, make_checkpoint):
    from click.testing import CliRunner

    from cli import cli as root_cli
    from registry.api import Registry

    home = str(tmp_path / "home")

    def run(*args):
        return CliRunner().invoke(root_cli, ["--home", home, *args])

    assert run("init").exit_code == 0
    assert "main -> v0 (a new ref)" in run("pretrain", "--shipped").output
    again = run("pretrain", "--shipped")
    assert again.exit_code == 0 and "main is already at v0" in again.output and "nothing was imported" in again.output
    with Registry.open(home=home) as reg:
        assert [v.name for v in reg.versions()] == ["v0"]
        _learn(reg, make_checkpoint, "v0", 1)
    r = run("pretrain", "--config", "tiny", "--episodes", "2", "--steps", "1", "--dagger-episodes", "0", "--dagger-steps", "0")
    assert r.exit_code == Code.INVALID_STATE.value and r.output.startswith("Error: main is at v1") and r.output.count("\n") == 1
    r = run("pretrain", "--shipped")
    assert r.exit_code == Code.INVALID_STATE.value and "--force" in r.output
