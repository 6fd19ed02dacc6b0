"""Ctrl-C or a kill in the middle of `learn` commits nothing and leaves `verify` clean."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learn_support import registry_state, tiny_registry
from registry.errors import RegistryError

ROOT = Path(__file__).resolve().parent.parent


def _start_learn(home: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "cli.py"), "--home", str(home), "learn", "plates", "--steps", "100000",
           "--batch-size", "8", "-n", "2", "--demo-episodes", "4"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            time.sleep(1.0)  # well inside the finetune
            return
    proc.kill()
    pytest.fail(f"never saw {marker!r}: {''.join(seen)[-800:]}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupting_learn_commits_nothing(tmp_path, sig):
    reg = tiny_registry(tmp_path)
    before = registry_state(reg)
    proc = _start_learn(tmp_path / "home")
    _wait_for(proc, "finetuning v0 on plates")
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Interrupted: nothing was committed." in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert registry_state(reg) == before
    with pytest.raises(RegistryError, match="does not exist"):
        reg.demo_set(1)  # not even the demo set was stored
    assert reg.verify().ok
    reg.close()
