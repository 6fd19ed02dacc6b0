"""Progress in a log: a line every few seconds with count, elapsed time and what is left."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from retain.progress import LogProgress, progress_bar

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_line_every_few_seconds_with_elapsed_and_eta():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(200, "train", unit="steps", stream=out, every=5.0, clock=clock)
    for _ in range(96):
        clock.t += 0.125  # 8 steps a second
        bar.update(1)
        bar.set_postfix(loss="0.1234")
    bar.close()
    assert out.getvalue().splitlines() == [
        "train: 40/200 steps, 5s elapsed, about 20s left, loss 0.1234",
        "train: 80/200 steps, 10s elapsed, about 15s left, loss 0.1234",
        "train: 96/200 steps, done in 12s, loss 0.1234",
    ]


def test_a_short_step_stays_silent_and_minutes_read_as_minutes():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(10, "evaluate", stream=out, every=5.0, clock=clock)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    bar = LogProgress(None, "alpha sweep", unit="alphas", stream=out, every=5.0, clock=clock)
    clock.t += 125
    bar.update(1)
    assert out.getvalue() == "alpha sweep: 1 alphas, 2m05s elapsed\n"


def test_not_a_terminal_means_log_lines_and_hidden_means_nothing():
    assert isinstance(progress_bar(5, "x", stream=io.StringIO()), LogProgress)
    assert progress_bar(5, "x", show=False) is None


def test_learn_in_a_log_prints_stage_progress(tmp_path):
    """A real learn with stderr going to a pipe: the finetune and the evaluations report progress lines."""
    from learn_support import save_tiny_model, tiny_config
    from registry.api import Registry

    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        reg.import_base(save_tiny_model(tmp_path / "w"), name="tiny", config=tiny_config())
    env = {**os.environ, "RETAIN_PROGRESS_EVERY": "0", "RETAIN_EVAL_WORKERS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--home", str(tmp_path / "home"), "learn", "plates", "--steps", "4",
                        "--batch-size", "8", "-n", "2", "--demo-episodes", "4", "--no-compare", "--alpha-grid", "0.5"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    first = next(ln for ln in err if ln.startswith("train: 1/4 steps, "))
    assert " elapsed, about " in first and " left" in first, r.stderr
    assert any(ln.startswith("train: 4/4 steps, done in") for ln in err), r.stderr
    assert any(ln.startswith("evaluate: ") and "evaluations" in ln for ln in err), r.stderr
    assert any(ln.startswith("alpha sweep: 1 alphas, ") for ln in err), r.stderr
    assert "\r" not in r.stderr and "it/s]" not in r.stderr and "alpha/s]" not in r.stderr  # no terminal bars in a log
