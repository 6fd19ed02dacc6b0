"""Scripted demonstrations: run the expert in a TabletopBatch and keep the successful episodes."""
from __future__ import annotations

import numpy as np

from typing import Sequence

from registry.errors import invalid, invalid_state
from retain.data.lerobot_layout import Episode
from retain.sim.batch import TabletopBatch
from retain.sim.world import WorldConfig, instructed_targets

FPS = 10.0          # recorded frame rate of a demo (one frame per env step)
_MAX_ROUNDS = 8     # extra rounds allowed to top up when some expert episodes fail


def collect_episodes(task: "str | Sequence[str]", n: int, setting: str = "id", seed: int = 0, *,
                     image_size: int | None = None,
                     config: WorldConfig | None = None, batch_size: int = 256, noise: float = 0.0) -> list[Episode]:
    """n successful expert episodes of `task` (or of a list of tasks, interleaved) in `setting`,
    reproducible from `seed`.

    Episodes are run `batch_size` at a time; failed ones are dropped and replaced from later rounds
    (each round's seed is derived from `seed`), so the result depends only on the arguments.
    With `noise` > 0 the executed actions get Gaussian noise of that standard deviation while the
    recorded actions stay the expert's clean ones (DART): the demos then show how to recover from
    small mistakes, which a cloned policy will make.
    """
    if n < 1:
        raise invalid(f"-n must be at least 1, got {n}")
    if batch_size < 1:
        raise invalid(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= noise <= 1.0:
        raise invalid(f"noise must be in [0, 1], got {noise}")
    out: list[Episode] = []
    rounds = _MAX_ROUNDS + 2 * -(-n // batch_size)
    for round_ in range(rounds):
        want = min(batch_size, max(n - len(out), 1) + 4)
        tasks = [task] if isinstance(task, str) else list(task)
        batch = TabletopBatch(tasks, setting, want, seed=_round_seed(seed, round_), image_size=image_size,
                              config=config)
        noise_rng = np.random.default_rng(_round_seed(seed, round_, stream=1))
        out.extend(_run(batch, noise, noise_rng))
        if len(out) >= n:
            return out[:n]
    names = task if isinstance(task, str) else ", ".join(task)
    raise invalid_state(f"the {names} expert succeeded in only {len(out)} of the episodes tried in "
                        f"{rounds} rounds; the setting is too hard for it (try another --setting)")


def _round_seed(seed: int, round_: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, round_, stream]).generate_state(1)[0])


def _run(batch: TabletopBatch, noise: float, rng: np.random.Generator) -> list[Episode]:
    obs = batch.reset()
    images, states, actions, targets = [], [], [], []
    live_masks = []
    while not batch.done.all():
        act = batch.expert_actions()
        live_masks.append(~batch.done)
        images.append(obs["image"])
        states.append(obs["state"])
        actions.append(act)
        targets.append(instructed_targets(batch.world))
        executed = act if noise == 0 else np.clip(act + rng.normal(0.0, noise, act.shape), -1, 1).astype(np.float32)
        obs, _, _ = batch.step(executed)
    if not images:
        return []
    live = np.stack(live_masks, 1)       # (n, T)
    imgs, st, ac, tg = np.stack(images, 1), np.stack(states, 1), np.stack(actions, 1), np.stack(targets, 1)
    episodes = []
    for i in np.nonzero(batch.success)[0]:
        t = int(live[i].sum())
        if t == 0:   # solved before any action: nothing to imitate
            continue
        episodes.append(Episode(imgs[i, :t], st[i, :t], ac[i, :t], batch.instructions[i], tg[i, :t]))
    return episodes
