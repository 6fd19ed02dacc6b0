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
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_ctrl_c_as_in_a_terminal)


def _ctrl_c_as_in_a_terminal() -> None:
    # A runner started in the background (`cmd &` in a script) ignores SIGINT, children inherit that,
    # and Python then installs no KeyboardInterrupt handler; a user's terminal never does this.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupting_learn_commits_nothing(tmp_path, sig):
    reg = tiny_registry(tmp_path)
    before = registry_state(reg)
    proc = _start_learn(tmp_path / "home")
    _wait_for(proc, "finetuning v0 on plates")
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig in (signal.SIGINT, signal.SIGTERM):  # both clean up and say so
        assert proc.returncode == 130 and "Interrupted: nothing was committed." in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    work = tmp_path / "home" / "work"
    left = sorted(p.name for p in work.iterdir()) if work.is_dir() else []
    if sig == signal.SIGKILL:  # its work folder stays, under the home, named for the dead process
        assert len(left) == 1 and left[0].startswith(f"{proc.pid}-") and "-learn-" in left[0], left
        size = sum(f.stat().st_size for f in (work / left[0]).rglob("*") if f.is_file())
        assert size > 0
        dry = reg.gc(dry_run=True)
        assert dry.work_folders == left and (work / left[0]).exists()
        report = reg.gc()
        assert report.work_folders == left and report.bytes_freed >= size
        assert list(work.iterdir()) == []
    else:  # cleaned up on the way out
        assert left == []
    assert registry_state(reg) == before
    with pytest.raises(RegistryError, match="does not exist"):
        reg.demo_set(1)  # not even the demo set was stored
    assert reg.verify().ok
    reg.close()


@pytest.mark.slow
def test_killing_a_ddp_learn_stops_its_workers(tmp_path):
    reg = tiny_registry(tmp_path)
    cmd = [sys.executable, str(ROOT / "cli.py"), "--home", str(tmp_path / "home"), "learn", "plates", "--steps", "100000",
           "--batch-size", "8", "-n", "2", "--demo-episodes", "4", "--nproc-per-node", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait_for(proc, "finetuning v0 on plates")
    time.sleep(8)  # let torchrun start its workers
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "nothing was committed" in err
    left = subprocess.run(["pgrep", "-f", f"retain.finetune .*retain-ddp"], capture_output=True, text=True).stdout.split()
    # only workers of THIS run would point at a spec under a now-deleted folder; none may be left
    assert not [pid for pid in left if _spec_gone(pid)]
    assert registry_state(reg) == ([ "v0"], {"main": "v0"}, 0, 0)
    reg.close()


def _spec_gone(pid: str) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    spec = next((a.decode() for a in args if a.endswith(b"spec.json")), None)
    return spec is not None and not Path(spec).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_evaluation_stops_its_workers(tmp_path, sig):
    """Ctrl-C in a terminal reaches the evaluation workers too: they leave it to learn, which stops
    them at once (not after their jobs of minutes), says so in one line and commits nothing; a kill
    of learn alone stops them the same way."""
    reg = tiny_registry(tmp_path)
    before = registry_state(reg)
    cmd = [sys.executable, str(ROOT / "cli.py"), "--home", str(tmp_path / "home"), "learn", "plates", "--steps", "4",
           "--batch-size", "8", "-n", "3000", "--demo-episodes", "4", "--alpha", "0.5"]  # jobs of minutes
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_ctrl_c_as_in_a_terminal, start_new_session=True,
                            env={**os.environ, "RETAIN_EVAL_WORKERS": "2"})
    _wait_for(proc, "evaluating the merged backbone")
    assert len(_group(proc.pid)) == 3, "learn and its two evaluation workers"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what a terminal does: the whole foreground group
    else:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Interrupted: nothing was committed." in err
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not _group(proc.pid), f"processes of the interrupted learn still running: {_group(proc.pid)}"
    assert registry_state(reg) == before
    assert reg.verify().ok
    reg.close()


def _group(pgid: int) -> list[str]:
    """The live processes of a process group (an exited one waiting to be reaped does not count)."""
    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[1][0] != "Z"]
