"""benchmarks/lerobot_compat.py without lerobot: it refuses a python lacking lerobot in one line, and its
comparison notices a pixel, a state value or a task text that differ (the lerobot runs are in docs/lerobot.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    from benchmarks import lerobot_compat

    return lerobot_compat


def test_a_python_without_lerobot_is_one_line():
    r = subprocess.run([sys.executable, "-m", "benchmarks.lerobot_compat", "--lerobot-python", sys.executable],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.strip().endswith("cannot import lerobot; make its environment as docs/lerobot.md says")


def test_the_comparison_notices_differences(tmp_path):
    compare = _bench().compare
    from retain.data import Episode, read_dataset, write_dataset

    rng = np.random.default_rng(0)
    eps = [Episode(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), rng.standard_normal((4, 5)).astype(np.float32),
                   rng.standard_normal((4, 4)).astype(np.float32), "stack it")]
    ours = read_dataset(write_dataset(tmp_path / "ds", eps, fps=10))
    theirs = {"images": ours.images.copy(), "state": ours.state.copy(), "action": ours.action.copy(),
              "episode_index": ours.episode_index, "frame_index": ours.frame_index, "task": np.array(["stack it"] * 4)}
    truth = {"images": ours.images.astype(np.int16)}
    same = compare(ours, theirs, truth)
    assert same["pixel_max_abs_diff"] == 0 and same["state_action_equal"] and same["tasks_equal"]
    theirs["images"][2, 3, 3, 1] ^= 4
    theirs["state"][1, 0] += 1e-3
    theirs["task"][0] = "other"
    diff = compare(ours, theirs, truth)
    assert diff["pixel_max_abs_diff"] == 4 and not diff["state_action_equal"] and not diff["tasks_equal"]
    assert diff["pixels_identical_fraction"] == 1 - 1 / ours.images.size
