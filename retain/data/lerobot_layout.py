"""The LeRobot v3.0 layout as this package writes and reads it: file paths and column keys, the
records for one episode to write (Episode) and a dataset read back (DemoData), and the parquet
reader that the tabular half (lerobot.py) and the video half (lerobot_video.py) share."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from registry.errors import corrupt
from registry.files import open_in

CODEBASE_VERSION = "v3.0"
IMAGE_STORAGE = "uint8-hwc-lists"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
VIDEO_FILE_MB = 200   # LeRobot's default size at which a camera stream moves on to the next file
TOLERANCE_S = 1e-4    # LeRobot's default: how far a decoded frame may lie from the row's timestamp
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE_KEY, ACTION_KEY, IMAGE_PREFIX = "observation.state", "action", "observation.images."


@dataclasses.dataclass
class Episode:
    """One demonstration to write: T frames, one instruction."""

    images: np.ndarray   # (T, H, W, 3) uint8
    state: np.ndarray    # (T, S) float32
    action: np.ndarray   # (T, A) float32
    instruction: str
    target: "np.ndarray | None" = None  # (T, 4) simulator-only privileged positions; never written


@dataclasses.dataclass
class DemoData:
    """A dataset read back: frame arrays aligned on the first axis (N frames)."""

    images: np.ndarray         # (N, H, W, 3) uint8, from `camera`
    state: np.ndarray          # (N, S) float32
    action: np.ndarray         # (N, A) float32
    episode_index: np.ndarray  # (N,) int64
    frame_index: np.ndarray    # (N,) int64
    task_index: np.ndarray     # (N,) int64
    timestamp: np.ndarray      # (N,) float32
    tasks: list[str]           # instruction text of each task_index
    fps: float
    camera: str
    info: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.state.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(np.unique(self.episode_index).size)

    def instructions(self) -> list[str]:
        """The instruction of every frame."""
        return [self.tasks[i] for i in self.task_index]


def read_parquet(fs, f: str, shown: str) -> pa.Table:
    try:
        with open_in(fs, f, "dataset file") as fh:
            # No Arrow thread at all: read_table (even with use_threads=False) and a Python file
            # object start C++ pool threads that are still alive when the process exits, and an
            # exit racing them ended in std::terminate (exit 134, "terminate called without an
            # active exception") after a clean error line, about 1 run in 50.
            return pq.ParquetFile(pa.BufferReader(fh.read())).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise corrupt(f"{shown}: cannot read {f.rsplit('/', 1)[-1]} as parquet ({e})") from None
