"""DAgger for the built-in simulator: roll a policy out, label every state it visits with the
scripted expert's action chunk from that state, and train on those states beside the experts' own.

Behaviour cloning only sees states the expert visits; a cloned policy drifts off them and then
acts on states it was never taught (in pick-up episodes the default base commanded a closed gripper
on half of its steps, mostly in mid-air; the expert on 7% of the same states). Relabelling its own states
teaches it to recover. The chunks are played out on a copy of each state
(`TabletopBatch.expert_chunk`): the expert's reactions along the policy's path would be a chunk
the expert never makes, and training on those took the base's picking from 45% to 0%.

Example:
    >>> frames = relabelled_frames(model, adapter, sim.PRETRAIN_TASKS, "pretrain", 3000, seed=1)
    >>> train_bc(model, adapter, expert_frames, 1000, 3e-4, 48, seed=1, mix=(frames, 0.5), targets=True)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retain.policies.adapter import PolicyAdapter
from retain.frames import ChunkFrames

_BATCH = 500  # episodes rolled out together: one forward pass per replanning step for all of them


def relabelled_frames(model, adapter: PolicyAdapter, tasks: Sequence[str], setting: str, episodes: int, seed: int,
                      chunk: int | None = None, roll_in: float = 0.0) -> ChunkFrames:
    """Every state of `episodes` closed-loop episodes of `model` (cycling over `tasks`), each with
    the expert's next `chunk` actions (default: the model's chunk). Reproducible from `seed`.

    With `roll_in` > 0 the expert drives each episode for its first U[0, roll_in) share of the
    task's step limit and the model takes over from there; only the model's states are kept. A
    policy that rarely grasps otherwise never visits, so never learns, the states after a grasp."""
    from retain import sim
    from retain.sim.world import instructed_targets

    cfg = getattr(model, "cfg", None)
    k = chunk or cfg.chunk
    image_size = getattr(cfg, "image_size", None)
    execute = adapter.execute_steps(model)
    parts: list[tuple] = []
    for start in range(0, episodes, _BATCH):
        n = min(_BATCH, episodes - start)
        names = [tasks[(start + i) % len(tasks)] for i in range(n)]
        batch = sim.TabletopBatch(names, setting, n, seed=seed + start, image_size=image_size)
        obs = batch.reset()
        instructions = list(batch.instructions)
        live = ~batch.done
        planned = np.zeros((n, execute, sim.ACTION_DIM), np.float32)
        handover = np.zeros(n, np.int64)
        if roll_in > 0:
            limit = np.array([sim.max_steps(name) for name in names])
            rng = np.random.default_rng([seed, start, 1])
            handover = (rng.random(n) * roll_in * limit).astype(np.int64)
        t = 0
        while live.any():
            mine = live & (t >= handover)
            step_in = (t - handover) % execute  # each episode replans every `execute` steps of its own
            due = np.flatnonzero(mine & (step_in == 0))
            if due.size:
                planned[due] = adapter.act_chunk(model, {"image": obs["image"][due], "state": obs["state"][due]},
                                                 [instructions[i] for i in due])
            idx = np.flatnonzero(mine)
            if idx.size:
                labels, pad = batch.expert_chunk(k, idx)
                parts.append((obs["image"][idx], obs["state"][idx], labels, pad,
                              [instructions[i] for i in idx], instructed_targets(batch.world)[idx]))
            act = planned[np.arange(n), step_in]
            if (live & ~mine).any():  # the expert still drives some episodes
                act = np.where(mine[:, None], act, batch.expert_actions())
            obs, _, done = batch.step(np.where(live[:, None], act, 0.0).astype(np.float32))
            live &= ~np.asarray(done, bool)
            t += 1
    images, state, chunks, pads, words, targets = zip(*parts)
    return ChunkFrames(np.concatenate(images), np.concatenate(state), np.concatenate(chunks), np.concatenate(pads),
                       [w for ws in words for w in ws], np.concatenate(targets).astype(np.float32))
