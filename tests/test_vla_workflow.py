"""The README's "Using your own VLA", step by step at small scale: `base import` of a sharded
Hugging Face checkpoint, `learn --finetune-cmd ... --eval-cmd ...` on a LeRobot video dataset
(tests/fixtures/tiny_trainer.py and tiny_eval.py stand in for the user's scripts), then
`lineage`, `scores`, `replay` and `rollback`; and what goes wrong: a failing trainer, an empty
{out}, a trainer that is not bit-reproducible, a learn interrupted while its trainer runs."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import registry_state, save_tiny_model, tiny_config

FIXTURES = Path(__file__).parent / "fixtures"
PY = shlex.quote(sys.executable)
pytest.importorskip("av")  # LeRobot video datasets need PyAV (the [video] extra, also in [test])


def _cli(home: Path, *args: str):
    return CliRunner().invoke(root_cli, ["--home", str(home), *args], catch_exceptions=False)


def _train(extra: str = "") -> str:
    return f"{PY} {FIXTURES / 'tiny_trainer.py'} {{parent}} {{demos}} {{out}} --seed {{seed}} --steps 30 --lr 2e-3 {extra}".strip()


@pytest.fixture
def vla(tmp_path, monkeypatch):
    """A sharded checkpoint with its config.json, a registry with it imported, and a video dataset."""
    from registry.checkpoint import CheckpointWriter, open_checkpoint

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    monkeypatch.chdir(tmp_path)
    single = save_tiny_model(tmp_path / "single")
    ckpt = tmp_path / "my_vla"
    with open_checkpoint(single) as ck:
        with CheckpointWriter(ckpt, [ck.specs[n] for n in ck.names], max_shard_bytes=ck.total_bytes // 3) as w:
            for n in ck.names:
                w.write(n, ck.read(n))
    (ckpt / "config.json").write_text(json.dumps(tiny_config()))
    home = tmp_path / "home"
    assert _cli(home, "init").exit_code == 0
    r = _cli(home, "base", "import", str(ckpt), "--name", "my-vla")
    assert r.exit_code == 0, r.output
    r = _cli(home, "demos", "collect", "plates", "-n", "2", "--image-size", "32", "--video", "-o", "demos")
    assert r.exit_code == 0, r.output
    evaluate = f"{PY} {FIXTURES / 'tiny_eval.py'} {{checkpoint}} --config {ckpt / 'config.json'} --demos demos"
    return tmp_path, home, ckpt, evaluate


def test_using_your_own_vla(vla):
    tmp, home, ckpt, evaluate = vla
    from registry.api import Registry

    assert len(list(ckpt.glob("model-*.safetensors"))) > 1 and (ckpt / "model.safetensors.index.json").exists()
    # step 2: your trainer finetunes, your evaluator picks alpha, learn merges, scores and commits
    r = _cli(home, "learn", "my-plates", "--demos", "demos", "--finetune-cmd", _train(), "--eval-cmd", evaluate, "-n", "2",
             "-q", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["version"]["name"] == "v1" and doc["validation_family"] == "ood:external"
    with Registry.open(home=str(home)) as reg:
        run = reg.learn_run_for("v1")
        rec = run.recipe
        assert rec["finetune_cmd"] == _train() and rec["mode"] == run.mode == "finetune-cmd"
        assert rec["finetune_cmd_run"]["exit_status"] == 0 and rec["finetune_cmd_run"]["wall_s"] > 0
        assert "steps" not in rec and rec["seed"] == 0  # the built-in finetune's options do not apply; the seed does
        log = (reg.fetch_delta(run.id, tmp / "stored") / rec["finetune_cmd_run"]["log_file"]).read_bytes()
        assert b"step 29 loss" in log and rec["finetune_cmd_run"]["log_tail"] == "sha256:" + hashlib.sha256(log).hexdigest()
        assert reg.demo_set(run.demo_set_id).episodes == 2
    # step 3: lineage, scores, replay (your trainer again, hashes compared), rollback
    r = _cli(home, "lineage")
    assert r.exit_code == 0 and "my-plates" in r.output and "finetune-cmd" in r.output
    r = _cli(home, "scores", "v1")
    assert r.exit_code == 0 and "my-plates" in r.output and "ood:external" in r.output
    r = _cli(home, "replay", "my-plates", "-q")
    assert r.exit_code == 0, r.output
    assert "reproduced every recorded weight hash bit for bit" in r.output
    r = _cli(home, "rollback", "v0", "-m", "my-plates hurt the rest")
    assert r.exit_code == 0, r.output
    with Registry.open(home=str(home)) as reg:
        assert reg.head("main").name == "v0" and reg.verify().ok


def test_a_trainer_that_is_not_bit_reproducible_stops_replay_unless_drift_is_accepted(vla):
    tmp, home, ckpt, evaluate = vla
    r = _cli(home, "learn", "my-plates", "--demos", "demos", "--finetune-cmd", _train("--drift"), "--eval-cmd", evaluate,
             "--alpha", "0.5", "-n", "2", "-q")
    assert r.exit_code == 0, r.output
    r = _cli(home, "replay", "my-plates", "-q")
    assert r.exit_code == 5
    assert "not bit-reproducible" in r.output and "--accept-drift" in r.output and len(r.output.strip().splitlines()) == 1
    r = _cli(home, "replay", "my-plates", "-q", "--accept-drift")
    assert r.exit_code == 0, r.output
    assert "NOT bit-reproducible, drift accepted" in r.output


@pytest.mark.parametrize("extra, words", [("--fail", "exited with status 3"), ("--no-output", "left no .safetensors")])
def test_a_failing_trainer_commits_nothing_and_says_why_in_one_line(vla, extra, words):
    tmp, home, ckpt, evaluate = vla
    from registry.api import Registry

    with Registry.open(home=str(home)) as reg:
        before = registry_state(reg)
    r = _cli(home, "learn", "my-plates", "--demos", "demos", "--finetune-cmd", _train(extra), "--eval-cmd", evaluate, "-q")
    assert r.exit_code == 5 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    if extra == "--fail":
        assert "CUDA out of memory (pretend)" in r.output  # the log's tail
    with Registry.open(home=str(home)) as reg:
        assert registry_state(reg) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_learn_stops_its_trainer_and_commits_nothing(vla, sig):
    tmp, home, ckpt, evaluate = vla
    from registry.api import Registry

    pidfile = tmp / "trainer.pid"
    env = {**os.environ, "TINY_TRAINER_PIDFILE": str(pidfile)}
    learn = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "cli.py"), "--home", str(home), "learn", "my-plates",
                              "--demos", "demos", "--finetune-cmd", _train("--sleep 120"), "--eval-cmd", evaluate, "-q"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text()):
        assert learn.poll() is None and time.monotonic() < deadline, learn.stderr.read().decode()
        time.sleep(0.2)
    trainer = int(pidfile.read_text())
    learn.send_signal(sig)
    learn.wait(timeout=60)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{trainer}") and "Z" not in Path(f"/proc/{trainer}/stat").read_text().split(")")[-1][:3]:
        assert time.monotonic() < deadline, "the trainer outlived learn"
        time.sleep(0.2)
    with Registry.open(home=str(home)) as reg:
        assert [v.name for v in reg.lineage().versions] == ["v0"] and not reg.learn_runs()
