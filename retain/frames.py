"""Training data as frames: demo episodes flattened to one row per frame (DemoFrames), and
frames that carry their own action chunk (ChunkFrames, DAgger's relabelled states).

Behaviour cloning (retain.train) and its batch pipeline (retain.batches) both read these; the
simulator's DemoData and LeRobot datasets convert with frames_from / frames_from_episodes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from registry.errors import invalid


@dataclasses.dataclass
class DemoFrames:
    """Frames of demo episodes, flat over episodes (N frames)."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    state: np.ndarray  # float32 (N, S)
    action: np.ndarray  # float32 (N, A)
    episode_index: np.ndarray  # int64 (N,), frames of one episode contiguous and in order
    task_index: np.ndarray  # int64 (N,) into `tasks`
    tasks: list[str]  # the instruction of each task index
    target: Optional[np.ndarray] = None  # float32 (N, 4) privileged positions (simulator demos only)

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in ("state", "action", "episode_index", "task_index") + (("target",) if self.target is not None else ()):
            if len(getattr(self, name)) != n:
                raise invalid(f"demo frames disagree: {n} images but {len(getattr(self, name))} rows of {name}; re-collect the demos")
        if n and (self.task_index.min() < 0 or self.task_index.max() >= len(self.tasks)):
            raise invalid(f"demo frames name task index {int(self.task_index.max())} but only {len(self.tasks)} tasks are listed")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def episodes(self) -> int:
        return int(len(np.unique(self.episode_index)))


def frames_from(data: Any) -> DemoFrames:
    """DemoFrames from the simulator's DemoData (or anything with the same fields)."""
    if isinstance(data, DemoFrames):
        return data
    return DemoFrames(
        images=np.asarray(data.images, dtype=np.uint8),
        state=np.asarray(data.state, dtype=np.float32),
        action=np.asarray(data.action, dtype=np.float32),
        episode_index=np.asarray(data.episode_index, dtype=np.int64),
        task_index=np.asarray(data.task_index, dtype=np.int64),
        tasks=list(data.tasks),
    )


def frames_from_episodes(episodes: Sequence[Any]) -> DemoFrames:
    """DemoFrames from episodes with `images`, `state`, `action` arrays (T, ...) and an `instruction`
    (the simulator's `Episode`); episodes sharing an instruction share a task index."""
    if not episodes:
        raise invalid("no demo episodes to train on; collect demos first")
    tasks: dict[str, int] = {}
    for e in episodes:
        tasks.setdefault(e.instruction, len(tasks))
    lengths = [len(e.action) for e in episodes]
    return DemoFrames(
        images=np.concatenate([e.images for e in episodes]).astype(np.uint8, copy=False),
        state=np.concatenate([e.state for e in episodes]).astype(np.float32, copy=False),
        action=np.concatenate([e.action for e in episodes]).astype(np.float32, copy=False),
        episode_index=np.repeat(np.arange(len(episodes)), lengths),
        task_index=np.repeat([tasks[e.instruction] for e in episodes], lengths).astype(np.int64),
        tasks=list(tasks),
        target=_all_or_none([getattr(e, "target", None) for e in episodes]),
    )


def _all_or_none(arrays: Sequence[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    """The arrays concatenated when every one is present, else None (targets are all-or-nothing)."""
    if not arrays or any(a is None for a in arrays):
        return None
    return np.concatenate(arrays).astype(np.float32, copy=False)


def concat_frames(parts: Sequence[DemoFrames]) -> DemoFrames:
    """One DemoFrames from several, renumbering episodes and tasks so they stay distinct."""
    if len(parts) == 1:
        return parts[0]
    eps, tidx, tasks, ep_offset = [], [], [], 0
    for p in parts:
        _, ep = np.unique(p.episode_index, return_inverse=True)
        eps.append(ep + ep_offset)
        ep_offset += int(ep.max()) + 1 if len(ep) else 0
        tidx.append(p.task_index + len(tasks))
        tasks.extend(p.tasks)
    return DemoFrames(
        images=np.concatenate([p.images for p in parts]),
        state=np.concatenate([p.state for p in parts]),
        action=np.concatenate([p.action for p in parts]),
        episode_index=np.concatenate(eps),
        task_index=np.concatenate(tidx),
        tasks=tasks,
        target=_all_or_none([p.target for p in parts]),
    )


def chunk_targets(episode_index: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """For each frame i: indices (N, chunk) of frames i..i+chunk-1, clipped to the episode's last
    frame, and a mask (N, chunk) that is True where the chunk ran past the end."""
    n = len(episode_index)
    ends = np.r_[np.flatnonzero(episode_index[1:] != episode_index[:-1]), n - 1] if n else np.zeros(0, np.int64)
    last = np.repeat(ends, np.diff(np.r_[-1, ends]))  # (N,) each frame's episode's last frame
    want = np.arange(n)[:, None] + np.arange(chunk)[None, :]
    return np.minimum(want, last[:, None]), want > last[:, None]


@dataclasses.dataclass
class ChunkFrames:
    """Frames that carry their own action chunk (N, K, A) instead of reading it off the next
    frames of an episode: states a policy visited, each labelled with the expert's chunk from it."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    state: np.ndarray  # float32 (N, S)
    chunks: np.ndarray  # float32 (N, K, A)
    pad: np.ndarray  # bool (N, K): past the task's end
    instructions: list[str]  # (N,)
    target: Optional[np.ndarray] = None  # float32 (N, 4) privileged positions

    def __len__(self) -> int:
        return len(self.images)
