"""Pretraining (tiny config, seconds), the shipped base's hash, and the pretrain/eval commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli as root
from registry.checkpoint import open_checkpoint, weight_hash
from retain import sim
from retain.pretrain_recipe import PretrainRecipe
from retain.pretrain import SHIPPED_MANIFEST, collect_frames, pretrain, shipped_base


def _hash(path) -> str:
    with open_checkpoint(path) as ckpt:
        return weight_hash(ckpt)


def test_collect_gives_frames_of_successful_episodes_in_time_order():
    data = collect_frames(["reach-object", "put-in-bowl"], "pretrain", episodes=6, seed=0, noise=0.1)
    assert data.episodes == 6
    assert data.images.shape[1:] == (sim.IMAGE_SIZE, sim.IMAGE_SIZE, 3) and data.images.dtype == np.uint8
    assert data.state.shape[1] == sim.STATE_DIM and data.action.shape[1] == sim.ACTION_DIM
    assert np.all(np.diff(data.episode_index) >= 0)
    assert {data.tasks[t].split()[0] for t in data.task_index}  # every frame names its instruction
    again = collect_frames(["reach-object", "put-in-bowl"], "pretrain", episodes=6, seed=0, noise=0.1)
    assert np.array_equal(data.images, again.images) and data.tasks == again.tasks


def test_tiny_pretrain_is_deterministic(tmp_path):
    recipe = PretrainRecipe.preset("tiny", seed=3)
    a = pretrain(recipe, tmp_path / "a")
    b = pretrain(recipe, tmp_path / "b")
    c = pretrain(PretrainRecipe.preset("tiny", seed=4), tmp_path / "c")
    assert _hash(a.weights_dir) == _hash(b.weights_dir) != _hash(c.weights_dir)
    assert a.frames > 0 and a.report.steps == recipe.steps


def test_a_dagger_stage_trains_on_the_policys_own_states_and_replays_to_the_same_bytes(tmp_path):
    plain = pretrain(PretrainRecipe.preset("tiny", seed=3), tmp_path / "plain")
    recipe = PretrainRecipe.preset("tiny", seed=3, dagger_episodes=6, dagger_steps=4)
    a = pretrain(recipe, tmp_path / "a")
    b = pretrain(PretrainRecipe.from_dict(recipe.to_dict()), tmp_path / "b")
    assert _hash(a.weights_dir) == _hash(b.weights_dir) != _hash(plain.weights_dir)
    assert a.frames > plain.frames and a.report.steps == recipe.steps + 4


def test_every_shipped_base_matches_its_recorded_hash_and_its_preset():
    from retain.policies import get_policy
    from retain.pretrain import shipped_names

    assert shipped_names() == ["default", "clutter"]  # the default, and the one it replaced, by name
    for name in shipped_names():
        base = shipped_base(name)  # raises if the bytes differ from the recorded hash
        manifest = json.loads((SHIPPED_MANIFEST if name == "default" else SHIPPED_MANIFEST.with_name(f"base-{name}.json")).read_text())
        assert base.weight_hash == manifest["weight_hash"] == _hash(base.weights_dir)
        assert base.recipe == PretrainRecipe.preset(name)  # `retain pretrain --config NAME` replays it
        get_policy(base.config["policy"]).load(base.weights_dir, base.config["policy_config"])
    assert shipped_base("default").weight_hash != shipped_base("clutter").weight_hash


def test_an_earlier_shipped_base_commits_by_name_and_an_unknown_name_is_one_line(run):
    from retain.pretrain import shipped_names

    res = run("pretrain", "--shipped", "clutter", "--ref", "old", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["weight_hash"] == shipped_base("clutter").weight_hash
    res = run("pretrain", "--shipped", "nope")
    assert res.exit_code == 4 and res.output.strip().splitlines() == [
        f"Error: no shipped base is called 'nope'; the package ships {', '.join(shipped_names())}"]


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    runner.invoke(root, ["--home", home, "init"], catch_exceptions=False)

    def invoke(*args: str):
        return runner.invoke(root, ["--home", home, *args], catch_exceptions=False)

    return invoke


def test_pretrain_then_eval_records_scores(run):
    res = run("pretrain", "--config", "tiny", "--episodes", "12", "--steps", "5", "--seed", "1", "--json")
    assert res.exit_code == 0, res.output
    version = json.loads(res.output)["version"]
    res = run("show", version, "--json")
    shown = json.loads(res.output)
    assert "pretrain" in json.dumps(shown) and '"episodes": 12' in json.dumps(shown)
    from retain.provenance import runtime

    assert shown["version"]["recipe"]["runtime"] == runtime()  # what the bytes also depend on
    res = run("eval", version, "--skill", "plates", "--split", "ood:position", "-n", "3", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["scores"]
    assert [(r["split"], r["episodes"]) for r in rows] == [("ood:position", 3)]
    res = run("scores", version, "--json")
    assert "ood:position" in res.output


def test_pretrain_shipped_commits_the_shipped_base_with_its_recipe(run):
    res = run("pretrain", "--shipped", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["version"] == "v0" and out["weight_hash"] == shipped_base().weight_hash
    shown = json.loads(run("show", "v0", "--json").output)
    assert "retain pretrain (shipped)" in json.dumps(shown) and "builtin-vla" in json.dumps(shown)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "v99", "--split", "generalist"], "v99"),
        (["eval", "main", "--skill", "juggling"], "unknown skill 'juggling'"),
        (["eval", "main", "--skill", "plates", "--split", "sideways"], "unknown split 'sideways'"),
        (["eval", "main", "--skill", "plates", "-n", "0"], "-n must be at least 1"),
        (["eval", "main", "--split", "id"], "needs a skill"),
        (["eval", "main", "--split", "generalist", "--device", "tpu"], "unknown device 'tpu'"),
        (["pretrain", "--config", "tiny", "--device", "cpu:1"], "unknown device 'cpu:1'"),
        (["pretrain", "--config", "huge"], "unknown pretrain config 'huge'"),
        (["pretrain", "--config", "tiny", "--episodes", "0"], "--episodes must be at least 1"),
        (["pretrain", "--config", "tiny", "--steps", "-3"], "--steps must be at least 1"),
        (["pretrain", "--shipped", "--steps", "10"], "--shipped takes the recorded recipe as it is"),
        (["pretrain", "--config", "tiny", "--dagger-episodes", "5"], "--dagger-episodes (5) and --dagger-steps (0) go together"),
        (["pretrain", "--config", "tiny", "--dagger-steps", "-2"], "--dagger-episodes (0) and --dagger-steps (-2) go together"),
        (["pretrain", "--config", "tiny", "--dagger-roll-in", "1.5"], "--dagger-roll-in must be in [0, 1)"),
        (["pretrain", "--config", "tiny", "--setting", "attic"], "unknown setting 'attic'"),
        (["pretrain", "--config", "tiny", "--dagger-setting", "attic"], "unknown setting 'attic'"),
        (["pretrain", "--shipped", "--setting", "pretrain-clutter"], "--shipped takes the recorded recipe as it is"),
    ],
)
def test_bad_input_is_one_clear_line(run, args, message):
    res = run(*args)
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.output


def test_a_damaged_shipped_manifest_is_one_corrupt_line_for_every_reader(tmp_path, monkeypatch):
    import retain.pretrain as pretrain_mod
    from registry.errors import RegistryError
    from retain.pretrain import shipped_image_size

    for text in ("{not json", json.dumps({"recipe": {}, "weight_hash": "x", "config": {"policy_config": {}}})):
        (tmp_path / "base.json").write_text(text)
        monkeypatch.setattr(pretrain_mod, "SHIPPED_MANIFEST", tmp_path / "base.json")
        for read in (shipped_base, shipped_image_size):
            with pytest.raises(RegistryError, match="manifest .* is missing or damaged; reinstall the package") as e:
                read()
            assert e.value.exit_code == 7


def test_a_written_base_records_its_runtime_and_a_check_names_what_changed(tmp_path, monkeypatch):
    import retain.pretrain as pretrain_mod
    from retain.pretrain import check_note, write_shipped_base
    from retain.provenance import runtime

    monkeypatch.setattr(pretrain_mod, "ASSETS", tmp_path)
    monkeypatch.setattr(pretrain_mod, "SHIPPED_BASE", tmp_path / "base.safetensors")
    monkeypatch.setattr(pretrain_mod, "SHIPPED_MANIFEST", tmp_path / "base.json")
    write_shipped_base(pretrain(PretrainRecipe.preset("tiny", seed=2), tmp_path / "made"))
    manifest = json.loads((tmp_path / "base.json").read_text())
    assert manifest["runtime"] == runtime() and shipped_base().weight_hash == manifest["weight_hash"]
    assert check_note(manifest["runtime"]) == "same runtime as the shipped base's: the recipe or code changed"
    other = "AVX2" if runtime()["cpu"] != "AVX2" else "AVX512"  # an instruction set this machine does not dispatch
    assert check_note({**runtime(), "cpu": other}) == f"runtime since the shipped base was made: cpu {other} -> {runtime()['cpu']}"
    assert check_note(None).startswith("the shipped base records no runtime, so what differs cannot be named")


def test_regenerating_the_shipped_base_refuses_unknown_arguments_before_training():
    """`python -m retain.pretrain` overwrites the shipped base after ~21 minutes: a typo of --check
    (or --help) must stop at once, not train and overwrite."""
    import subprocess
    import sys

    before = SHIPPED_MANIFEST.stat().st_mtime_ns
    typo = subprocess.run([sys.executable, "-m", "retain.pretrain", "--chek"], capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "unrecognized arguments: --chek" in typo.stderr
    usage = subprocess.run([sys.executable, "-m", "retain.pretrain", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--check" in usage.stdout
    assert SHIPPED_MANIFEST.stat().st_mtime_ns == before
