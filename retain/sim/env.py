"""A single-episode gymnasium environment over the same core as TabletopBatch.

    import gymnasium, retain.sim
    env = gymnasium.make("retain/Tabletop-v0", task="plates", setting="id")
    obs, info = env.reset(seed=0)          # info["instruction"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

reward is 1.0 on the step the task succeeds (then terminated); truncated at the task's max_steps.
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from retain.sim.batch import TabletopBatch
from retain.sim.settings import get_setting
from retain.sim.tasks import get_task
from retain.sim.world import ACTION_DIM, STATE_DIM, WorldConfig


class TabletopEnv(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str = "plates", setting: str = "id", image_size: int | None = None,
                 config: WorldConfig | None = None, render_mode: str | None = "rgb_array"):
        self.task = get_task(task).name
        self.setting = get_setting(setting)
        self.config = config or WorldConfig()
        self.image_size = image_size or self.config.image_size
        s = self.image_size
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (s, s, 3), np.uint8),
            # gripper x, y in [-1, 1]; z, grip and holding in [0, 1]
            "state": spaces.Box(np.array([-1, -1, 0, 0, 0], np.float32), np.ones(STATE_DIM, np.float32)),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.render_mode = render_mode
        self._batch: TabletopBatch | None = None
        self._obs: dict[str, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # each reset draws the episode's own seed from the env's generator, so reset(seed=s) is reproducible
        episode_seed = int(self.np_random.integers(0, 2**63 - 1))
        self._batch = TabletopBatch([self.task], self.setting, 1, episode_seed, image_size=self.image_size,
                                    config=self.config)
        self._obs = self._single(self._batch.reset())
        return self._obs, self._info()

    def step(self, action):
        if self._batch is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        act = np.asarray(action, np.float32).reshape(1, ACTION_DIM)
        obs, success, done = self._batch.step(act)
        self._obs = self._single(obs)
        terminated = bool(success[0])
        truncated = bool(done[0]) and not terminated
        return self._obs, float(terminated), terminated, truncated, self._info()

    def expert_action(self) -> np.ndarray:
        """The scripted expert's next action for this episode (ACTION_DIM,)."""
        assert self._batch is not None, "reset() first"
        return self._batch.expert_actions()[0]

    def render(self):
        return None if self._obs is None else self._obs["image"]

    def _info(self) -> dict[str, Any]:
        b = self._batch
        assert b is not None
        return {"instruction": b.instructions[0], "success": bool(b.success[0]), "task": self.task,
                "step": int(b.t[0])}

    @staticmethod
    def _single(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in obs.items()}
