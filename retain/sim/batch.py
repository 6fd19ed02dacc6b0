"""TabletopBatch: n episodes stepped together with numpy. The fast path for demos and evaluation."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from registry.errors import invalid
from retain.sim import render as _render
from retain.sim.experts import expert_actions as _expert
from retain.sim.scene import SceneBuilder
from retain.sim.settings import Setting, get_setting
from retain.sim.tasks import get_task, instructions
from retain.sim.world import ACTION_DIM, WorldConfig, WorldState, step_physics, success


class TabletopBatch:
    """n tabletop episodes over one setting; episode i runs task_names[i % len(task_names)].

    Example:
        batch = TabletopBatch(["plates"], "id", n=64, seed=0)
        obs = batch.reset()
        while not batch.done.all():
            obs, success, done = batch.step(batch.expert_actions())

    Determinism: the seed fixes every scene (objects, camera, lighting, phrasing) of every reset, in
    order; physics has no randomness, so equal seeds and equal actions give equal images and states.
    """

    def __init__(self, task_names: "str | Sequence[str]", setting: "str | Setting", n: int, seed: int,
                 *, image_size: int | None = None, config: WorldConfig | None = None):
        names = [task_names] if isinstance(task_names, str) else list(task_names)
        if not names:
            raise invalid("no task given; name at least one task")
        if n < 1:
            raise invalid(f"n must be at least 1, got {n}")
        self.tasks = [get_task(t) for t in names]
        self.setting = get_setting(setting)
        cfg = config or WorldConfig()
        if image_size is not None and image_size != cfg.image_size:
            import dataclasses
            cfg = dataclasses.replace(cfg, image_size=image_size)
        self.config = cfg
        self.n = n
        self.seed = seed
        self.task_names: list[str] = [names[i % len(names)] for i in range(n)]
        self.instructions: list[str] = []
        self.max_steps = np.array([self.tasks[i % len(names)].max_steps for i in range(n)], np.int64)
        self._rng = np.random.default_rng(seed)
        self.world: WorldState | None = None
        self._images: np.ndarray | None = None   # last rendered frame of every episode

    # -- episode control -----------------------------------------------------------------------
    def reset(self) -> dict[str, np.ndarray]:
        """Draw n fresh scenes; returns the first observation."""
        n, cfg, s = self.n, self.config, self.setting
        w = WorldState.empty(n)
        words_out = [""] * n
        by_task: dict[str, list[int]] = {}
        for i, t in enumerate(self.task_names):
            by_task.setdefault(t, []).append(i)
        for name in sorted(by_task):  # a fixed order keeps the seed -> scene map stable
            idx = np.array(by_task[name])
            task = get_task(name)
            sb = SceneBuilder(self._rng, s, cfg, len(idx))
            task.build(sb)
            sb.w.behaviour[:] = int(task.behaviour)
            for f in w.__dataclass_fields__:
                getattr(w, f)[idx] = getattr(sb.w, f)
            for i, text in zip(idx, instructions(task, sb.words, s.phrasing, self._rng, len(idx))):
                words_out[i] = text
        # grippers start high, open, over a random spot
        w.grip_xy[:] = self._rng.uniform(-0.6, 0.6, (n, 2))
        w.grip_z[:] = 1.0
        self.world = w
        self.instructions = words_out
        self._view = self._make_view()
        self._images = None
        self.t = np.zeros(n, np.int64)
        self.success = success(w)
        self.done = self.success.copy()
        return self.observe()

    def _make_view(self) -> _render.View:
        s, n, r = self.setting, self.n, self._rng
        bg = np.array(s.backgrounds)[r.integers(0, len(s.backgrounds), n)]
        return _render.make_view(
            self.config,
            shift=r.uniform(-s.camera_shift, s.camera_shift, (n, 2)).astype(np.float32),
            zoom=r.uniform(*s.camera_zoom, n).astype(np.float32),
            rot=r.uniform(-s.camera_rot, s.camera_rot, n).astype(np.float32),
            shear=r.uniform(-s.camera_shear, s.camera_shear, n).astype(np.float32),
            background=bg, brightness=r.uniform(*s.brightness, n).astype(np.float32),
            tint=r.uniform(-s.tint, s.tint, (n, 3)).astype(np.float32),
            noise_seed=int(r.integers(0, 2**31)),
        )

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Apply actions (n, ACTION_DIM) in [-1, 1] to the live episodes.

        Returns (obs, success, done); `success` is sticky and an episode is done once it succeeds
        or reaches its task's max_steps. Finished episodes ignore their actions.
        """
        w = self._live_world()
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.n, ACTION_DIM):
            raise invalid(f"actions must have shape ({self.n}, {ACTION_DIM}), got {actions.shape}")
        live = ~self.done
        step_physics(w, actions, live, self.config)
        self.t[live] += 1
        self.success |= live & success(w)
        self.done = self.success | (self.t >= self.max_steps)
        return self._observe(live), self.success.copy(), self.done.copy()

    def expert_actions(self) -> np.ndarray:
        """The scripted expert's next action for every episode (n, ACTION_DIM) float32."""
        return _expert(self._live_world(), self.config)

    def expert_chunk(self, k: int, episodes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The expert's next `k` actions from the current state of `episodes` (indices, default
        all), played out on a copy of the world (this batch does not move): actions
        (len, k, ACTION_DIM) and a pad mask (len, k), True once the task is achieved. These are
        the labels for relabelling states a policy visits (DAgger); the expert's reactions along
        the policy's own path would be a chunk the expert never makes (a grasp the policy skipped
        never shows up in it)."""
        w = self._live_world().subset(np.arange(self.n) if episodes is None else np.asarray(episodes))
        going = ~success(w)
        actions = np.zeros((w.n, k, ACTION_DIM), np.float32)
        pad = np.zeros((w.n, k), bool)
        for i in range(k):
            actions[:, i] = _expert(w, self.config)
            pad[:, i] = ~going
            step_physics(w, actions[:, i], going, self.config)
            going &= ~success(w)
        return actions, pad

    # -- observation ---------------------------------------------------------------------------
    def observe(self) -> dict[str, np.ndarray]:
        """The current observation of every episode (renders all of them)."""
        return self._observe(np.ones(self.n, bool))

    def _observe(self, changed: np.ndarray) -> dict[str, np.ndarray]:
        # Finished episodes do not change, so only the episodes that just stepped are re-rendered.
        w = self._live_world()
        if changed.all() or self._images is None:
            self._images = _render.render(w, self._view, self.config)
        elif changed.any():
            idx = np.nonzero(changed)[0]
            self._images[idx] = _render.render(w.subset(idx), self._view.subset(idx), self.config)
        return {"image": self._images.copy(), "state": w.state_vector()}

    def _live_world(self) -> WorldState:
        if self.world is None:
            raise invalid("call reset() before step(), observe() or expert_actions()")
        return self.world
