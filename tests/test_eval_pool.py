"""Evaluations in worker processes: the same outcomes as in-process, errors carried back, and no
worker outliving its caller."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from registry.errors import RegistryError
from retain.eval_pool import EvalJob, EvalPool, default_workers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base():
    from retain.pretrain import shipped_base

    return shipped_base()


def _jobs(base, episodes: int = 6) -> list[EvalJob]:
    cfg = base.config
    path = str(base.weights_dir)
    return [EvalJob(cfg, path, "generalist", "generalist", episodes, 7),
            EvalJob(cfg, path, "put-in-bowl", "pretrain", episodes, 3),
            EvalJob(cfg, path, "reach-object", "pretrain", episodes, 5)]


def test_two_workers_give_the_outcomes_of_one_process(base):
    """Every job runs whole in one process at one thread, so the worker count cannot change a score."""
    from retain.evaluate import evaluate
    from retain.policies import get_policy

    jobs = _jobs(base)
    with EvalPool(workers=2) as pool:
        parallel = pool.run(jobs)
    with EvalPool(workers=1) as pool:
        serial = pool.run(jobs)
    adapter = get_policy(base.config["policy"])
    model = adapter.load(base.weights_dir, base.config["policy_config"])
    direct = [evaluate(model, adapter, j.task, j.setting, j.episodes, j.seed, threads=1) for j in jobs]
    assert [r.outcomes for r in parallel] == [r.outcomes for r in serial] == [r.outcomes for r in direct]
    outcomes = [o for r in direct for o in r.outcomes]
    assert any(outcomes) and not all(outcomes)  # a real base: successes and failures both, so equality says something
    assert [(r.task, r.setting) for r in parallel] == [(j.task, j.setting) for j in jobs]


def test_a_job_that_fails_in_a_worker_raises_its_own_error_here(base):
    bad = EvalJob(base.config, str(base.weights_dir), "plates", "ood:nowhere", 2, 0)
    good = _jobs(base, episodes=2)
    with EvalPool(workers=2) as pool:
        with pytest.raises(RegistryError, match="unknown setting 'ood:nowhere'") as e:
            pool.run(good[:1] + [bad])
        assert e.value.exit_code == 4
        # the pool is usable again, and no answer of the failed run is taken for one of this run
        again = pool.run(good)
    with EvalPool(workers=1) as pool:
        assert [r.outcomes for r in again] == [r.outcomes for r in pool.run(good)]


def test_a_script_without_a_main_guard_can_evaluate_in_workers(base, tmp_path):
    """Workers are fresh `python -m retain.eval_pool` processes: the caller's script is not re-run in them."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from retain.eval_pool import EvalJob, EvalPool
        from retain.pretrain import shipped_base
        b = shipped_base()
        with EvalPool(workers=2) as pool:
            rs = pool.run([EvalJob(b.config, str(b.weights_dir), "generalist", "generalist", 2, s) for s in range(3)])
        print("evaluated", len(rs))
    """))
    for how in ([sys.executable, str(script)], [sys.executable, "-"]):
        out = subprocess.run(how, input=script.read_text() if how[-1] == "-" else None, capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.splitlines() == ["evaluated 3"]


def test_progress_is_reported_once_per_job(base):
    ticks = []
    with EvalPool(workers=2) as pool:
        pool.run(_jobs(base, episodes=1), done=lambda: ticks.append(1))
    assert len(ticks) == 3


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("RETAIN_EVAL_WORKERS", "3")
    assert default_workers() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("RETAIN_EVAL_WORKERS", bad)
        with pytest.raises(RegistryError, match="RETAIN_EVAL_WORKERS=.* is not a worker count; set it to a whole number"):
            default_workers()
    monkeypatch.delenv("RETAIN_EVAL_WORKERS")
    assert 1 <= default_workers() <= 8
    # a checkpoint of which no two copies fit in memory: one worker, however many cores
    assert default_workers(model_bytes=2**50) == 1
    monkeypatch.setenv("RETAIN_EVAL_WORKERS", "2")
    assert default_workers(model_bytes=2**50) == 2  # the user's explicit count stands


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table with ps")
def test_workers_exit_when_their_caller_is_killed(base, tmp_path):
    """kill -9 gives the caller no chance to stop its workers: they notice and exit by themselves."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from retain.eval_pool import EvalJob, EvalPool
        from retain.pretrain import shipped_base
        b = shipped_base()
        pool = EvalPool(workers=2)
        print("running", flush=True)
        pool.run([EvalJob(b.config, str(b.weights_dir), "generalist", "generalist", 400, s) for s in range(4)])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(2.0)  # inside the jobs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table with ps")
def test_a_worker_that_dies_is_one_clear_error(base):
    """An out-of-memory kill of a worker must not hang the caller or end in a traceback."""
    with EvalPool(workers=2) as pool:
        pool.start()
        pool.run(_jobs(base, episodes=1))  # the workers are up
        victim = next(p for p in _children(os.getpid()) if b"retain.eval_pool" in Path(f"/proc/{p}/cmdline").read_bytes())
        jobs = [EvalJob(base.config, str(base.weights_dir), "generalist", "generalist", 300, s) for s in range(4)]
        killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        with pytest.raises(RegistryError, match="an evaluation worker died .*RETAIN_EVAL_WORKERS=1"):
            pool.run(jobs)
        killer.join()
