"""The `lerobot` side of benchmarks/lerobot_compat.py; runs in lerobot's own virtual environment.

    python lerobot_compat_child.py write DATASET FRAMES.npz   # LeRobotDataset.create + add_frame + save_episode
    python lerobot_compat_child.py read DATASET OUT.npz        # LeRobotDataset(...)[i] for every frame
    python lerobot_compat_child.py chunks DATASET OUT.json     # as a trainer reads it: delta_timestamps windows

RETAIN_LEROBOT_VIDEO_BACKEND (torchcodec or pyav) picks lerobot's decoder; unset, lerobot's default.

FRAMES.npz holds images (N, H, W, 3) uint8, state, action, lengths (per episode), tasks (per episode), fps.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


BACKEND = os.environ.get("RETAIN_LEROBOT_VIDEO_BACKEND") or None


def write(dataset: Path, frames: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    f = np.load(frames)
    h, w = f["images"].shape[1:3]
    features = {
        "observation.images.top": {"dtype": "video", "shape": (int(h), int(w), 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (f["state"].shape[1],), "names": None},
        "action": {"dtype": "float32", "shape": (f["action"].shape[1],), "names": None},
    }
    ds = LeRobotDataset.create("local/compat", fps=int(f["fps"]), features=features, root=dataset, use_videos=True)
    i = 0
    for length, task in zip(f["lengths"], f["tasks"]):
        for _ in range(int(length)):
            ds.add_frame({"observation.images.top": f["images"][i], "observation.state": f["state"][i],
                          "action": f["action"][i], "task": str(task)})
            i += 1
        ds.save_episode()
    ds.finalize()


def read(dataset: Path, out: Path) -> None:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/compat", root=dataset, video_backend=BACKEND)
    items = [ds[i] for i in range(len(ds))]
    img = np.stack([(it["observation.images.top"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8) for it in items])
    np.savez(out, images=img,
             state=np.stack([it["observation.state"].numpy() for it in items]),
             action=np.stack([it["action"].numpy() for it in items]),
             episode_index=np.array([int(it["episode_index"]) for it in items]),
             frame_index=np.array([int(it["frame_index"]) for it in items]),
             task=np.array([str(it["task"]) for it in items]),
             meta=json.dumps({"lerobot": lerobot.__version__, "video_backend": getattr(ds, "video_backend", None) or getattr(ds, "_video_backend", None),
                              "episodes": ds.num_episodes, "frames": ds.num_frames}))


def chunks(dataset: Path, out: Path) -> None:
    """Read every frame as a trainer does (previous image + this one, a 3-step action chunk) and check
    each window against the frames read one by one: the from_timestamp and episode-boundary arithmetic."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    plain = LeRobotDataset("local/compat", root=dataset, video_backend=BACKEND)
    fps = plain.fps
    win = LeRobotDataset("local/compat", root=dataset, video_backend=BACKEND, delta_timestamps={
        "observation.images.top": [-1 / fps, 0.0], "action": [0.0, 1 / fps, 2 / fps]})
    frames = [plain[i] for i in range(len(plain))]
    bad_images = bad_actions = 0
    for i in range(len(win)):
        item = win[i]
        ep, fi = int(frames[i]["episode_index"]), int(frames[i]["frame_index"])
        prev = i - 1 if fi > 0 else i   # lerobot clamps a window at the episode's start
        bad_images += not (torch.equal(item["observation.images.top"][1], frames[i]["observation.images.top"])
                           and torch.equal(item["observation.images.top"][0], frames[prev]["observation.images.top"]))
        for k in range(3):
            j = i + k
            j = j if j < len(frames) and int(frames[j]["episode_index"]) == ep else max(
                m for m in range(i, min(i + 3, len(frames))) if int(frames[m]["episode_index"]) == ep)
            bad_actions += not torch.equal(item["action"][k], frames[j]["action"])
    out.write_text(json.dumps({"windows": len(win), "image_windows_wrong": int(bad_images), "action_steps_wrong": int(bad_actions)}))


if __name__ == "__main__":
    {"write": write, "read": read, "chunks": chunks}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
