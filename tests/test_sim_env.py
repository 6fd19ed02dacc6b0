"""The gymnasium environment "retain/Tabletop-v0": standard API, seeding, expert success."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import retain.sim  # noqa: F401  (registers the environment)
from registry.errors import RegistryError


def test_passes_gymnasiums_env_checker():
    env = gymnasium.make("retain/Tabletop-v0", task="whiteboard", setting="ood:viewpoint")
    check_env(env.unwrapped, skip_render_check=True)


def test_reset_with_a_seed_reproduces_the_episode_and_the_expert_succeeds():
    env = gymnasium.make("retain/Tabletop-v0", task="pot-on-stove", setting="ood:position")
    traces = []
    for _ in range(2):
        obs, info = env.reset(seed=42)
        frames = [obs["image"]]
        assert info["instruction"] == "put the pot on the stove" and info["success"] is False
        while True:
            obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            frames.append(obs["image"])
            if terminated or truncated:
                break
        assert terminated and reward == 1.0 and info["success"]
        traces.append(np.stack(frames))
    assert np.array_equal(traces[0], traces[1])
    other, _ = env.reset(seed=43)
    assert not np.array_equal(other["image"], traces[0][0])


def test_truncates_at_the_tasks_step_limit():
    env = gymnasium.make("retain/Tabletop-v0", task="press-button", setting="generalist")
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
        assert not terminated
        steps += 1
    assert steps == retain.sim.max_steps("press-button")


def test_unknown_task_or_setting_is_a_clear_error():
    with pytest.raises(RegistryError, match="unknown task"):
        gymnasium.make("retain/Tabletop-v0", task="juggle")
    with pytest.raises(RegistryError, match="unknown setting"):
        gymnasium.make("retain/Tabletop-v0", task="plates", setting="mars")
