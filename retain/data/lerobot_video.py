"""The video side of the LeRobot v3 layout: camera streams as MP4 files addressed by meta/episodes.

A LeRobot v3 camera (`observation.images.<camera>`, dtype "video") lives in
`videos/<key>/chunk-XXX/file-XXX.mp4`, many episodes back to back per file. Each episode's row in
meta/episodes names its file (`videos/<key>/chunk_index`, `file_index`) and where it starts and
ends in it (`from_timestamp`, `to_timestamp`); a frame row's image is the video frame at
`from_timestamp + timestamp`, within a tolerance. Writing follows the same layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from registry.errors import corrupt, invalid, not_found
from registry.files import open_in
from retain.data.lerobot_layout import VIDEO_PATH, Episode, read_parquet

COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


def write_videos(root: Path, key: str, episodes: Sequence[Episode], fps: float, vcodec: str,
                 file_mb: float) -> tuple[dict[str, pa.Array], dict[str, Any]]:
    """The camera's MP4 files (episodes back to back, a new file past `file_mb`), their meta/episodes
    columns and the feature's info.json entry."""
    from retain.data.video import Mp4Writer, video_info

    h, w = episodes[0].images.shape[1:3]
    cols: dict[str, list] = {n: [] for n in COLUMNS}
    file_index, writer = 0, None
    try:
        for ep in episodes:
            if writer is not None and writer.bytes >= file_mb * 1e6:
                writer.close()
                writer, file_index = None, file_index + 1
            if writer is None:
                dest = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=file_index)
                dest.parent.mkdir(parents=True, exist_ok=True)
                writer = Mp4Writer(dest, w, h, fps, vcodec)
            start, end = writer.add_episode(ep.images)
            for n, v in zip(COLUMNS, (0, file_index, start, end)):
                cols[n].append(v)
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    first = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
    info = video_info(lambda: open(first, "rb"), str(first))
    feature = {"dtype": "video", "shape": [int(h), int(w), 3], "names": ["height", "width", "channels"], "info": info}
    return ({f"videos/{key}/{n}": pa.array(v, pa.int64() if n.endswith("_index") else pa.float64()) for n, v in cols.items()},
            feature)


def image_stats(images: np.ndarray) -> dict[str, Any]:
    """A camera's stats as LeRobot records them (per channel, pixels scaled to [0, 1], shape (3, 1, 1)),
    which its trainers read to normalise images."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0

    def per_channel(v: np.ndarray) -> list:
        return v.reshape(3, 1, 1).tolist()

    return {"min": per_channel(x.min(0)), "max": per_channel(x.max(0)), "mean": per_channel(x.mean(0)),
            "std": per_channel(x.std(0)), "count": [int(images.shape[0])]}


def video_images(fs, root: str, shown: str, info: dict[str, Any], key: str, episode_index: np.ndarray,
                 frame_index: np.ndarray, timestamp: np.ndarray, tolerance_s: float, decode: bool = True) -> np.ndarray:
    """The (N, H, W, 3) uint8 frames of video feature `key` for N frame rows, decoding only those.
    With decode=False the files are only checked to exist and to span the rows: (N, 0, 0, 3)."""
    from retain.data.video import decode_at

    feature = info["features"][key]
    height, width = _frame_size(feature, shown, key)
    version = str(info.get("codebase_version", "v3.0"))
    if version.startswith(("v1.", "v2.")):
        raise invalid(f"{shown} is a LeRobot {version} dataset (one video per episode); this reads v3.0: convert it "
                      f"with lerobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=...`")
    template = info.get("video_path")
    if not isinstance(template, str) or "{video_key}" not in template:
        raise invalid(f"{shown}: feature {key!r} is declared as video but meta/info.json has no video_path "
                      f"(LeRobot's is {VIDEO_PATH!r}); add it, or declare the feature as an image")
    try:
        template.format(video_key=key, chunk_index=0, file_index=0)
    except (KeyError, IndexError, ValueError) as e:
        raise invalid(f"{shown}: video_path {template!r} in meta/info.json is not a v3.0 template (it may use only "
                      f"video_key, chunk_index and file_index; {type(e).__name__}: {e}); LeRobot's is {VIDEO_PATH!r}") from None
    where = _episode_files(fs, root, shown, key)
    n = episode_index.size
    images = np.zeros((n, height, width, 3) if decode else (n, 0, 0, 3), np.uint8)
    files: dict[tuple[int, int], list[int]] = {}
    for ep in np.unique(episode_index):
        if int(ep) not in where:
            raise corrupt(f"{shown}: episode {int(ep)} has frames but no row in meta/episodes naming its {key} video; "
                          f"the episode metadata is incomplete (re-export the dataset)")
        files.setdefault(where[int(ep)][:2], []).append(int(ep))
    for (chunk, file), eps in sorted(files.items()):
        rel = template.format(video_key=key, chunk_index=chunk, file_index=file)
        full = f"{root.rstrip('/')}/{rel}"
        rows = np.nonzero(np.isin(episode_index, eps))[0]
        if not fs.exists(full):
            raise not_found(f"{shown}: video file {rel} (camera {key}, episode {_span(eps)}) is missing; "
                            f"fetch the dataset's videos/ folder as well as data/ and meta/")
        starts = np.array([where[int(e)][2] for e in episode_index[rows]])
        ends = np.array([where[int(e)][3] for e in episode_index[rows]])
        t = timestamp[rows].astype(np.float64)
        outside = (t < -tolerance_s) | (~np.isnan(ends) & (starts + t > ends + tolerance_s))
        if outside.any():
            i = rows[np.argmax(outside)]
            raise invalid(f"{shown}: frame {int(frame_index[i])} of episode {int(episode_index[i])} has timestamp "
                          f"{float(timestamp[i]):.4f} s, outside its {key} video span ({_span_s(where, episode_index[i])}); "
                          f"fix the frame timestamps or the episode's from/to_timestamp in meta/episodes")
        if not decode:
            continue
        got = decode_at(lambda: open_in(fs, full, "video file"), f"{shown}: {rel}", starts + t, tolerance_s, (height, width))
        if not got.found.all():
            j = int(np.argmin(got.found))
            i = rows[j]
            raise invalid(f"{shown}: {rel} has no frame within {tolerance_s:g} s of {starts[j] + t[j]:.4f} s "
                          f"(episode {int(episode_index[i])}, frame {int(frame_index[i])}); its frames run from "
                          f"{got.first:.4f} s to {got.last:.4f} s: the timestamps in data/ or meta/episodes do not match the video")
        images[rows] = got.frames
    return images


def _frame_size(feature: dict[str, Any], shown: str, key: str) -> tuple[int, int]:
    shape, names = feature.get("shape"), feature.get("names") or []
    if not isinstance(shape, list) or len(shape) != 3:
        raise invalid(f"{shown}: feature {key!r} must declare a 3-D shape (H, W, C) in meta/info.json, got {shape!r}")
    if names and str(names[0]).startswith("channel"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _episode_files(fs, root: str, shown: str, key: str) -> dict[int, tuple[int, int, float, float]]:
    """episode -> (chunk_index, file_index, from_timestamp, to_timestamp) of `key`'s video."""
    files = sorted(fs.glob(f"{root.rstrip('/')}/meta/episodes/**/*.parquet"))
    if not files:
        raise invalid(f"{shown} has no meta/episodes/**/*.parquet; a video dataset needs it to find each episode's video")
    cols = ["episode_index"] + [f"videos/{key}/{c}" for c in COLUMNS]
    out: dict[int, tuple[int, int, float, float]] = {}
    for f in files:
        t = read_parquet(fs, f, shown)
        if f"videos/{key}/chunk_index" not in t.column_names or f"videos/{key}/file_index" not in t.column_names:
            raise invalid(f"{shown}: feature {key!r} is declared as video but meta/episodes names no file for it "
                          f"(no videos/{key}/chunk_index and file_index columns); add them or declare it as an image")
        got = {c: t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows for c in cols}
        for ep, chunk, file, start, end in zip(*(got[c] for c in cols)):
            out[int(ep)] = (int(chunk), int(file), float(start or 0.0), float("nan") if end is None else float(end))
    return out


def _span(eps: list[int]) -> str:
    return str(eps[0]) if len(eps) == 1 else f"{min(eps)}-{max(eps)}"


def _span_s(where: dict, ep) -> str:
    _, _, start, end = where[int(ep)]
    return f"{start:.4f} s to {end:.4f} s of its file" if end == end else f"from {start:.4f} s of its file"
