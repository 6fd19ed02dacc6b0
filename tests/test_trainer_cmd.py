"""retain.trainer_cmd: the --finetune-cmd template, its one-line failures, and that no trainer
outlives what started it (timeout, Ctrl-C, SIGKILL of the caller)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from registry.errors import Code, RegistryError
from retain.trainer_cmd import check_template, fill, run_trainer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("template, words", [
    ("train {parent} {out} {steps}", "uses {steps}"),
    ("train {parent} {demos}", "must use {out}"),
    ("train {out}", "must use {parent}"),
    ("train {parent} {out} {", "unbalanced braces"),
])
def test_bad_templates_are_refused_in_one_line(template, words):
    with pytest.raises(RegistryError, match=words.replace("{", r"\{").replace("}", r"\}")) as e:
        check_template(template)
    assert e.value.code == Code.INVALID_VALUE and "\n" not in str(e.value)


def test_values_are_shell_quoted_and_literal_braces_kept(tmp_path):
    cmd = fill("echo {{x}} {parent} {demos} {out} {seed}", parent=tmp_path / "my parent", demos="s3://b/it's",
               out=tmp_path / "o", seed=7)
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True).stdout.split("\n")[0]
    assert out == f"{{x}} {tmp_path / 'my parent'} s3://b/it's {tmp_path / 'o'} 7"
    with pytest.raises(RegistryError, match="pass --demos"):
        fill("t {parent} {demos} {out}", parent=tmp_path, demos=None, out=tmp_path, seed=0)


def test_a_failing_command_is_one_line_with_its_log_tail(tmp_path):
    with pytest.raises(RegistryError) as e:
        run_trainer("echo starting; echo 'ValueError: bad shape' >&2; exit 3 # {parent} {out}", parent=tmp_path,
                    demos=None, out=tmp_path / "out", seed=0, log=tmp_path / "log")
    msg = str(e.value)
    assert e.value.code == Code.INVALID_STATE and "\n" not in msg
    assert "exited with status 3" in msg and "ValueError: bad shape" in msg and "nothing was committed" in msg


def test_a_command_that_leaves_no_safetensors_is_refused(tmp_path):
    with pytest.raises(RegistryError, match=r"left no \.safetensors in \{out\}.*all done") as e:
        run_trainer("echo all done; touch {out}/notes.txt # {parent}", parent=tmp_path, demos=None, out=tmp_path / "out",
                    seed=0, log=tmp_path / "log")
    assert e.value.code == Code.INVALID_STATE


def test_a_timeout_stops_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="timeout") as e:
        run_trainer(f"sleep 60 & echo $! > {pidfile}; wait # {{parent}} {{out}}", parent=tmp_path, demos=None,
                    out=tmp_path / "out", seed=0, log=tmp_path / "log", timeout_s=1.5)
    assert e.value.code == Code.INVALID_STATE and time.monotonic() - t0 < 20
    assert _gone_within(int(pidfile.read_text()), 5)  # the grandchild too, not only the shell


CALLER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from retain.trainer_cmd import run_trainer
    tmp = Path(sys.argv[1])
    run_trainer(f"sleep 60 & echo $! > {tmp / 'pid'}; wait # {{parent}} {{out}}", parent=tmp, demos=None,
                out=tmp / "out", seed=0, log=tmp / "log")
''')


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupting_or_killing_the_caller_stops_the_trainer(tmp_path, sig):
    """Ctrl-C reaches learn (KeyboardInterrupt: it stops the group); SIGKILL leaves nothing to
    clean up, so the supervisor notices its parent is gone and stops the group itself."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    caller = subprocess.Popen([sys.executable, "-c", CALLER, str(tmp_path)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
        assert time.monotonic() < deadline and caller.poll() is None
        time.sleep(0.1)
    trainer = int((tmp_path / "pid").read_text())
    assert _alive(trainer)
    caller.send_signal(sig)
    caller.wait(timeout=30)
    assert _gone_within(trainer, 15)
