"""Resumable pretraining: checkpoints every N steps, a resume ends bit for bit where an uninterrupted
run ends, a real SIGKILL at any moment loses at most one interval and never a half-written
checkpoint, and bad --resume / --device input is one line with nothing changed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import retain.pretrain_run as pretrain_run
from cli import cli as root
from registry.checkpoint import open_checkpoint, weight_hash
from retain.pretrain_recipe import PretrainRecipe
from retain.pretrain import pretrain, resume_pretrain
from retain.train_state import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _hash(path) -> str:
    with open_checkpoint(path) as ckpt:
        return weight_hash(ckpt)


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_run_resumed_from_any_of_its_checkpoints_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path, monkeypatch):
    recipe = PretrainRecipe.preset("tiny", seed=3, dagger_episodes=4, dagger_steps=6)
    plain = pretrain(recipe, tmp_path / "plain")
    snapshots: list[Path] = []
    write = pretrain_run.write_checkpoint

    def write_and_copy(run_dir, state, notes=None):  # the run folder as a kill right after this checkpoint leaves it
        out = write(run_dir, state, notes)
        snapshots.append(tmp_path / f"at-{len(snapshots)}")
        shutil.copytree(run_dir, snapshots[-1])
        return out

    monkeypatch.setattr(pretrain_run, "write_checkpoint", write_and_copy)
    full = pretrain(recipe, tmp_path / "full", run_dir=tmp_path / "run", checkpoint_steps=5)
    monkeypatch.setattr(pretrain_run, "write_checkpoint", write)
    assert _hash(full.weights_dir) == _hash(plain.weights_dir)
    stages = [json.loads((s / "checkpoint.json").read_text())["notes"]["stage"] for s in snapshots]
    assert stages == ["bc"] * 3 + ["dagger"]  # steps 5, 10, 15 of 20, then 5 of the stage's 6
    for snap in snapshots:
        res = resume_pretrain(snap, tmp_path / f"{snap.name}-out")
        assert _hash(res.weights_dir) == _hash(plain.weights_dir), snap
        assert res.report.losses == plain.report.losses and res.report.final_loss == plain.report.final_loss


def test_a_continued_recipe_makes_what_dagger_continue_makes_and_resumes_in_every_stage(tmp_path, monkeypatch):
    from benchmarks.dagger_continue import main as dagger_continue

    base = PretrainRecipe.preset("tiny", seed=3, dagger_episodes=4, dagger_steps=6)
    (tmp_path / "base").mkdir()
    first = pretrain(base, tmp_path / "base" / "weights")
    (tmp_path / "base" / "policy_config.json").write_text(json.dumps(base.policy_config))
    (tmp_path / "base" / "recipe.json").write_text(json.dumps({"recipe": base.to_dict()}))
    assert dagger_continue(["--base", str(first.weights_dir), "--base-config", str(tmp_path / "base" / "policy_config.json"),
                            "--setting", "pretrain-receptacles", "--episodes", "4", "--steps", "7", "--threads", "1",
                            "--out", str(tmp_path / "continued")]) == 0
    recorded = json.loads((tmp_path / "continued" / "recipe.json").read_text())["recipe"]
    recipe = PretrainRecipe.from_dict(recorded)
    assert recipe.stages() == ["bc", "dagger", "continue1"] and recipe.continuations[0].setting == "pretrain-receptacles"
    plain = pretrain(recipe, tmp_path / "plain")
    assert _hash(plain.weights_dir) == _hash(tmp_path / "continued" / "weights")  # the recipe makes the continued base

    snapshots: list[Path] = []
    write = pretrain_run.write_checkpoint

    def write_and_copy(run_dir, state, notes=None):
        out = write(run_dir, state, notes)
        snapshots.append(tmp_path / f"at-{len(snapshots)}")
        shutil.copytree(run_dir, snapshots[-1])
        return out

    monkeypatch.setattr(pretrain_run, "write_checkpoint", write_and_copy)
    pretrain(recipe, tmp_path / "full", run_dir=tmp_path / "run", checkpoint_steps=5)
    monkeypatch.setattr(pretrain_run, "write_checkpoint", write)
    stages = [json.loads((s / "checkpoint.json").read_text())["notes"]["stage"] for s in snapshots]
    assert stages == ["bc"] * 3 + ["dagger", "continue1"]
    for snap in snapshots:
        res = resume_pretrain(snap, tmp_path / f"{snap.name}-out")
        assert _hash(res.weights_dir) == _hash(plain.weights_dir), snap
        assert (res.report.losses, res.frames) == (plain.report.losses, plain.frames)


def test_a_bad_continuation_is_refused_by_name():
    from registry.errors import RegistryError

    assert "continuations" not in PretrainRecipe.preset("clutter").to_dict()  # earlier recipes keep their bytes
    with pytest.raises(RegistryError, match="unknown setting|nowhere"):
        PretrainRecipe.preset("tiny", continuations=[{"setting": "nowhere"}])
    with pytest.raises(RegistryError, match="a continuation is a mapping of setting, episodes, steps"):
        PretrainRecipe.preset("tiny", continuations=[{"stepz": 3}])
    with pytest.raises(RegistryError, match="share must be in"):
        PretrainRecipe.preset("tiny", continuations=[{"share": 1.5}])


def _cli(home: Path, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "--home", str(home), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run never reached the point to kill it at"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_any_moment_loses_at_most_one_interval_and_never_a_checkpoint(tmp_path):
    home, run = tmp_path / "home", tmp_path / "run"
    args = ("pretrain", "--config", "tiny", "--steps", "40", "--seed", "5", "--json")
    assert _cli(home, "init").wait() == 0
    # 1: killed while a checkpoint is half-written (the fault hook holds it there for a while)
    proc = _cli(home, *args, "--run-dir", str(run), "--checkpoint-steps", "4",
                env={"RETAIN_FAULT_PAUSE_IN_CHECKPOINT": "2"})
    _kill_when(proc, lambda: (run / "checkpoint.json").exists() and any(p.name.endswith(".partial") for p in run.iterdir()))
    state, _ = read_checkpoint(run)  # the previous checkpoint is intact and in force
    assert state.step == 4
    # 2: killed mid-training, between checkpoints, after a resume
    proc = _cli(home, *args, "--resume", str(run))
    _kill_when(proc, lambda: json.loads((run / "checkpoint.json").read_text())["step"] >= 16)
    state, _ = read_checkpoint(run)
    assert state.step >= 16 and state.step % 4 == 0
    # 3: resumed to the end: committed, the same bytes as one uninterrupted run
    proc = _cli(home, *args, "--resume", str(run))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    committed = json.loads(out)
    plain = pretrain(PretrainRecipe.preset("tiny", steps=40, seed=5), tmp_path / "plain")
    assert committed["weight_hash"] == _hash(plain.weights_dir)
    again = _cli(home, "pretrain", "--resume", str(run))
    _, err = again.communicate(timeout=120)
    assert again.returncode == 5 and err.strip().splitlines() == [
        f"Error: the run in {run} already finished and was committed as {committed['version']}; nothing to resume"]


@pytest.fixture
def cli_run(tmp_path):
    runner = CliRunner()
    home = tmp_path / "home"
    runner.invoke(root, ["--home", str(home), "init"], catch_exceptions=False)

    def invoke(*args: str):
        return runner.invoke(root, ["--home", str(home), *args])

    return invoke


def _one_line_error(res, code: int, *needles: str) -> None:
    lines = res.output.strip().splitlines()
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("Error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_resume_input_is_one_line_and_changes_nothing(cli_run, tmp_path):
    run = tmp_path / "run"
    recipe = PretrainRecipe.preset("tiny", steps=12, seed=2)
    write = pretrain_run.write_checkpoint

    def stop_after_first(run_dir, state, notes=None):
        write(run_dir, state, notes)
        raise KeyboardInterrupt  # as a Ctrl-C right after the first checkpoint

    pretrain_run.write_checkpoint = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(recipe, tmp_path / "w", run_dir=run, checkpoint_steps=4)
    finally:
        pretrain_run.write_checkpoint = write
    snapshot = _tree(run)
    versions = cli_run("lineage", "--format", "json").output

    (tmp_path / "empty").mkdir()
    _one_line_error(cli_run("pretrain", "--resume", str(tmp_path / "empty")), 9, "is not a pretraining run")
    _one_line_error(cli_run("pretrain", "--resume", str(run), "--steps", "99", "--seed", "2", "--config", "default"), 4,
                    "options differ", "steps (recorded 12, given 99)", "config (recorded 'tiny', given 'default')")
    assert "seed" not in cli_run("pretrain", "--resume", str(run), "--steps", "99", "--seed", "2").output
    _one_line_error(cli_run("pretrain", "--resume", str(run), "--compile"), 4, "compile (recorded False, given True)")
    _one_line_error(cli_run("pretrain", "--resume", str(run), "--device", "tpu"), 4, "unknown device 'tpu'")
    _one_line_error(cli_run("pretrain", "--resume", str(run), "--run-dir", str(tmp_path / "x")), 4, "give one of them")
    _one_line_error(cli_run("pretrain", "--config", "tiny", "--run-dir", str(run)), 3, "already exists", "--resume")
    assert _tree(run) == snapshot

    other = tmp_path / "other"
    shutil.copytree(run, other)
    record = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**record, "kind": "retain learn run"}))
    _one_line_error(cli_run("pretrain", "--resume", str(other)), 4, "not a retain pretrain run")
    (other / "run.json").write_text(json.dumps({**record, "recipe": {**record["recipe"], "recipe_version": 1}}))
    _one_line_error(cli_run("pretrain", "--resume", str(other)), 4, "recipe version 1")

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (weights,) = broken.glob("ckpt-*/model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = _tree(broken)
    _one_line_error(cli_run("pretrain", "--resume", str(broken)), 7, "is damaged", "model.safetensors")
    assert _tree(broken) == before
    assert cli_run("lineage", "--format", "json").output == versions  # nothing committed by any of them

    res = cli_run("pretrain", "--resume", str(run), "--json")  # the good one still resumes
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["weight_hash"] == _hash(pretrain(recipe, tmp_path / "plain").weights_dir)


def test_device_cuda_without_a_gpu_is_one_line_and_trains_nothing(cli_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    versions = cli_run("lineage", "--format", "json").output
    _one_line_error(cli_run("pretrain", "--config", "tiny", "--device", "cuda"), 4, "torch sees none", "--device cpu")
    _one_line_error(cli_run("pretrain", "--config", "tiny", "--device", "cuda:1"), 4, "torch sees none")
    _one_line_error(cli_run("pretrain", "--config", "tiny", "--bf16"), 4, "GPU only")
    assert cli_run("lineage", "--format", "json").output == versions
