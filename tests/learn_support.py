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
    from retain.train import DemoFrames

    rng = np.random.default_rng(seed)
    n = episodes * length
    state = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    action = np.tanh(state[:, :4] * 1.5).astype(np.float32)
    images = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    return DemoFrames(images, state, action, np.repeat(np.arange(episodes), length), np.zeros(n, np.int64), [instruction])
