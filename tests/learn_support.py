"""Shared helpers for the learn-loop tests (finetune, learn, replay): tiny real models and data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# The policy engineer's "tiny" pretrain preset: trains in seconds.
TINY = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
        "vision_channels": 16, "vocab_size": 512, "chunk": 4, "execute": 2}


def tiny_config() -> dict:
    return {"policy": "builtin-vla", "policy_config": dict(TINY)}


def save_tiny_model(dest: Path, seed: int = 0) -> Path:
    from retain.policies import get_policy

    adapter = get_policy("builtin-vla")
    return adapter.save(adapter.build(TINY, seed=seed), dest)


def synthetic_frames(episodes: int = 8, length: int = 12, seed: int = 0, instruction: str = "put the plate in the rack"):
    """Demo frames whose action is a fixed function of the state: something a policy can learn."""
    from retain.frames import DemoFrames

    rng = np.random.default_rng(seed)
    n = episodes * length
    state = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    action = np.tanh(state[:, :4] * 1.5).astype(np.float32)
    images = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    return DemoFrames(images, state, action, np.repeat(np.arange(episodes), length), np.zeros(n, np.int64), [instruction])


# Learn options that keep a whole learn (finetune, 3-alpha sweep, 8 evaluations) to seconds: the
# language search without lineage checks (the choice before --keep; tests/test_learn_keep.py has the default).
FAST = dict(steps=8, batch_size=8, episodes=2, demo_episodes=4, threads=1, compare_finetuned=False, strategy="language", keep=("none",))


def fast_options(**changes):
    from retain.learn_options import LearnOptions

    return LearnOptions.of(**{**FAST, **changes})


FAST_CLI = ["--steps", "8", "--batch-size", "8", "-n", "2", "--demo-episodes", "4", "--no-compare", "-q",
            "--alpha-strategy", "language", "--keep", "none"]


def tiny_registry(root: Path, db_url: str | None = None):
    """A registry under `root` whose main holds a tiny random builtin-vla base (v0)."""
    from registry.api import Registry

    base = save_tiny_model(root / "base-weights")
    reg = Registry.open(home=str(root / "home"), db_url=db_url, create=True)
    reg.import_base(base, name="tiny", config=tiny_config())
    return reg


def registry_state(reg) -> tuple:
    """What a failed command must leave unchanged: versions, refs, learn runs, scores of main."""
    lin = reg.lineage()
    return ([v.name for v in lin.versions], dict(lin.refs), len(reg.learn_runs()), len(reg.scores()))
