"""LeRobot v3-layout datasets: write our demos, read ours or a user's.

Layout written (a LeRobot v3.0 dataset; with `video=True` the camera goes to MP4 files instead):

    meta/info.json                                 codebase_version "v3.0", fps, features, totals
    meta/tasks.parquet                             task_index, task (the instruction text, marked
                                                   as the pandas index, where LeRobot looks for it)
    meta/episodes/chunk-000/file-000.parquet       episode_index, tasks, length, data/* file and
                                                   dataset_from_index / dataset_to_index
    meta/stats.json                                min / max / mean / std of state and action
                                                   (and, with video=True, of the camera as LeRobot has it)
    data/chunk-000/file-000.parquet                one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4
                                                   with video=True: the episodes back to back; each
                                                   episode's videos/<key>/chunk_index, file_index,
                                                   from_timestamp and to_timestamp in meta/episodes

Frame columns: `observation.images.<camera>` (uint8 H x W x 3 as nested fixed-size lists,
declared in info.json with dtype "image" and "retain_image_storage": "uint8-hwc-lists"),
`observation.state` and `action` (float32 lists), `timestamp`, `frame_index`, `episode_index`,
`index`, `task_index`.

The reader decodes video features (dtype "video") through retain.data.video: only the frames the
rows ask for, found by timestamp (episode from_timestamp + frame timestamp, within `tolerance_s`,
as LeRobot does). It also accepts the variants users have: images as LeRobot's struct {bytes: PNG, path},
as flat lists, channel-first (C, H, W) shapes, or floats in [0, 1]; a tasks table whose task text
is the index; several data files. It reads from a local folder or any fsspec URL. Writing goes to a
temporary sibling folder renamed into place at the end, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute.list_value_length)
import pyarrow.parquet as pq

from registry.errors import already_exists, corrupt, invalid, not_found
from registry.files import open_in
from retain.data.lerobot_layout import (ACTION_KEY, CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, IMAGE_PREFIX, IMAGE_STORAGE,
                                        STATE_KEY, TOLERANCE_S, VIDEO_FILE_MB, VIDEO_PATH, DemoData, Episode, read_parquet)

# -- writing ---------------------------------------------------------------------------------------
def write_dataset(path: "str | os.PathLike", episodes: Sequence[Episode], fps: float, *, camera: str = "top",
                  robot_type: str = "retain-tabletop", extra_info: dict[str, Any] | None = None,
                  video: bool = False, vcodec: str = "av1", video_file_mb: float = VIDEO_FILE_MB) -> Path:
    """Write `episodes` as a LeRobot v3 dataset folder at `path` (which must not exist).

    Args:
        path: the new dataset folder (local).
        episodes: demonstrations; all must share image, state and action shapes.
        fps: frames per second recorded in info.json and used for timestamps.
        camera: name of the image feature (`observation.images.<camera>`).
        extra_info: more keys for info.json (e.g. how the demos were made).
        video: store the camera as MP4 (LeRobot's "video" dtype, needs PyAV) instead of pixel arrays.
        vcodec: the video codec: av1 (LeRobot's default), h264 or hevc.
        video_file_mb: start a new MP4 file once one reaches this size (whole episodes per file).
    Returns:
        The folder written.
    Example:
        write_dataset("demos/plates", [Episode(images, state, action, "put the plate in the rack")], fps=10)
    """
    dest = Path(path)
    if dest.exists():
        raise already_exists(f"output path {dest} already exists; choose a new path or remove it first")
    if not dest.parent.exists():
        raise not_found(f"folder {dest.parent} does not exist; create it first")
    _check_episodes(episodes)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_into(tmp, episodes, fps, camera, robot_type, extra_info or {},
                    (vcodec, video_file_mb) if video else None)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _check_episodes(episodes: Sequence[Episode]) -> None:
    if not episodes:
        raise invalid("no episodes to write; record at least one")
    first = episodes[0]
    for i, ep in enumerate(episodes):
        t = ep.state.shape[0]
        if t == 0:
            raise invalid(f"episode {i} has no frames")
        if ep.images.shape[1:] != first.images.shape[1:] or ep.images.shape[0] != t or ep.images.dtype != np.uint8:
            raise invalid(f"episode {i}: images {ep.images.shape} {ep.images.dtype} do not match "
                          f"({t},) + {first.images.shape[1:]} uint8")
        if ep.state.shape[1:] != first.state.shape[1:] or ep.action.shape != (t,) + first.action.shape[1:]:
            raise invalid(f"episode {i}: state {ep.state.shape} / action {ep.action.shape} shapes differ from episode 0")


def _write_into(root: Path, episodes: Sequence[Episode], fps: float, camera: str, robot_type: str,
                extra: dict[str, Any], video: "tuple[str, float] | None") -> None:
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    tasks: list[str] = []
    for ep in episodes:
        if ep.instruction not in tasks:
            tasks.append(ep.instruction)
    lengths = np.array([ep.state.shape[0] for ep in episodes], np.int64)
    n = int(lengths.sum())
    images = np.concatenate([ep.images for ep in episodes])
    state = np.concatenate([ep.state for ep in episodes]).astype(np.float32)
    action = np.concatenate([ep.action for ep in episodes]).astype(np.float32)
    episode_index = np.repeat(np.arange(len(episodes)), lengths)
    frame_index = np.concatenate([np.arange(t) for t in lengths])
    task_index = np.repeat([tasks.index(ep.instruction) for ep in episodes], lengths)
    image_key = IMAGE_PREFIX + camera
    h, w, c = images.shape[1:]
    columns: dict[str, Any] = {} if video else {image_key: _nested_uint8(images)}
    table = pa.table({
        **columns,
        STATE_KEY: _float_lists(state),
        ACTION_KEY: _float_lists(action),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index.astype(np.int64)),
        "episode_index": pa.array(episode_index.astype(np.int64)),
        "index": pa.array(np.arange(n, dtype=np.int64)),
        "task_index": pa.array(task_index.astype(np.int64)),
    })
    pq.write_table(table, root / DATA_PATH.format(chunk_index=0, file_index=0))
    pq.write_table(_tasks_table(tasks), root / "meta" / "tasks.parquet")
    ends = np.cumsum(lengths)
    if video:
        from retain.data.lerobot_video import write_videos

        video_columns, image_feature = write_videos(root, image_key, episodes, fps, *video)
    else:
        video_columns = {}
        image_feature = {"dtype": "image", "shape": [h, w, c], "names": ["height", "width", "channels"],
                         "retain_image_storage": IMAGE_STORAGE}
    pq.write_table(pa.table({
        "episode_index": pa.array(np.arange(len(episodes), dtype=np.int64)),
        "tasks": pa.array([[ep.instruction] for ep in episodes], pa.list_(pa.string())),
        "length": pa.array(lengths),
        "data/chunk_index": pa.array(np.zeros(len(episodes), np.int64)),
        "data/file_index": pa.array(np.zeros(len(episodes), np.int64)),
        "dataset_from_index": pa.array(ends - lengths),
        "dataset_to_index": pa.array(ends),
        **video_columns,
    }), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    s, a = state.shape[1], action.shape[1]
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
        "total_episodes": len(episodes), "total_frames": n, "total_tasks": len(tasks),
        "chunks_size": 1000, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_files_size_in_mb": 100, "video_files_size_in_mb": video[1] if video else VIDEO_FILE_MB,
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if video else None,
        "features": {
            image_key: image_feature,
            STATE_KEY: {"dtype": "float32", "shape": [s], "names": None},
            ACTION_KEY: {"dtype": "float32", "shape": [a], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
        **extra,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    stats = {k: {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
                 "std": v.std(0).tolist(), "count": [n]} for k, v in ((STATE_KEY, state), (ACTION_KEY, action))}
    if video:
        from retain.data.lerobot_video import image_stats

        stats[image_key] = image_stats(images)
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot's pandas writes it: task_index, with the text as the frame's index
    (`tasks.iloc[i].name` is how LeRobot looks a task's text up)."""
    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
    }
    table = pa.table({"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _nested_uint8(images: np.ndarray) -> pa.Array:
    n, h, w, c = images.shape
    arr: pa.Array = pa.array(np.ascontiguousarray(images).reshape(-1), pa.uint8())
    for size in (c, w, h):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return arr


def _float_lists(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x).reshape(-1), pa.float32()), x.shape[1])


# -- reading ---------------------------------------------------------------------------------------
def read_dataset(path: "str | os.PathLike", *, camera: str | None = None, state_dim: int | None = None,
                 action_dim: int | None = None, image_shape: tuple[int, int] | None = None,
                 episodes: Sequence[int] | None = None, tolerance_s: float = TOLERANCE_S,
                 decode_images: bool = True) -> DemoData:
    """Read a LeRobot v3-layout dataset from a local folder or an fsspec URL.

    Args:
        path: the dataset folder ("demos/plates", "memory://x", "s3://bucket/demos", ...).
        camera: which `observation.images.<camera>` to load (default: the first one).
        state_dim / action_dim / image_shape: what the caller needs; a mismatch is an error that
            says so, rather than a failure deep inside training.
        episodes: read only these episode indices (default: all); a video is decoded only where
            their rows point.
        tolerance_s: how far a video frame may lie from a row's timestamp (LeRobot's default).
        decode_images: False reads everything but the pixels (images come back as (N, 0, 0, 3)), for
            a caller that hands the dataset to someone else's trainer; the video files are still
            checked to exist and to span the rows' timestamps.
    Returns:
        DemoData with frame-aligned arrays.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    info = _read_info(fs, root, str(path))
    features = info.get("features")
    if not isinstance(features, dict):
        raise corrupt(f"{path}: meta/info.json has no 'features' mapping; it is not a LeRobot dataset")
    cams = [k for k in features if k.startswith(IMAGE_PREFIX)]
    if not cams:
        raise invalid(f"{path}: no image feature ({IMAGE_PREFIX}<camera>) in meta/info.json")
    key = cams[0] if camera is None else IMAGE_PREFIX + camera
    if key not in features:
        raise invalid(f"{path}: no camera {camera!r}; the dataset has {', '.join(c[len(IMAGE_PREFIX):] for c in cams)}")
    for needed in (STATE_KEY, ACTION_KEY):
        if needed not in features:
            raise invalid(f"{path}: meta/info.json declares no {needed!r} feature; a demo set needs it")
    is_video = features[key].get("dtype") == "video"
    table = _read_frames(fs, root, str(path), ([] if is_video or not decode_images else [key]) + [
        STATE_KEY, ACTION_KEY, "episode_index", "frame_index", "task_index", "timestamp"])
    if episodes is not None:
        table = _select_episodes(table, episodes, path)
    n = table.num_rows
    state = _matrix(table, STATE_KEY, features, path)
    action = _matrix(table, ACTION_KEY, features, path)
    ints = {c: _ints(table, c, path) for c in ("episode_index", "frame_index", "task_index")}
    fps = float(info.get("fps", 10))
    ts = (np.asarray(table.column("timestamp").to_numpy(zero_copy_only=False), np.float32)
          if "timestamp" in table.column_names else (ints["frame_index"] / fps).astype(np.float32))
    if is_video:
        from retain.data.lerobot_video import video_images

        images = video_images(fs, root, str(path), info, key, ints["episode_index"], ints["frame_index"], ts, tolerance_s,
                              decode=decode_images)
    elif decode_images:
        images = _images(table.column(key), features[key], n, path, key)
    else:
        images = np.zeros((n, 0, 0, 3), np.uint8)
    tasks = _read_tasks(fs, root, str(path))
    if ints["task_index"].size and (ints["task_index"].min() < 0 or ints["task_index"].max() >= len(tasks)):
        raise corrupt(f"{path}: task_index runs to {ints['task_index'].max()} but meta/tasks.parquet has "
                      f"{len(tasks)} tasks")
    data = DemoData(images, state, action, ints["episode_index"], ints["frame_index"], ints["task_index"], ts,
                    tasks, fps, key[len(IMAGE_PREFIX):], info)
    _check_expected(data, path, state_dim, action_dim, image_shape if decode_images else None)
    return data


def _read_info(fs, root: str, shown: str) -> dict[str, Any]:
    p = f"{root.rstrip('/')}/meta/info.json"
    if not fs.exists(root):
        raise not_found(f"dataset {shown} does not exist")
    if not fs.exists(p):
        raise invalid(f"{shown} has no meta/info.json; point at the root of a LeRobot v3 dataset folder")
    try:
        with open_in(fs, p, "dataset file") as f:
            info = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise corrupt(f"{shown}: meta/info.json is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise corrupt(f"{shown}: meta/info.json must hold a JSON object")
    return info


def _read_frames(fs, root: str, shown: str, wanted: list[str]) -> pa.Table:
    files = sorted(fs.glob(f"{root.rstrip('/')}/data/**/*.parquet"))
    if not files:
        raise invalid(f"{shown} has no data/**/*.parquet files; write the frames under data/")
    parts = []
    for f in files:
        t = read_parquet(fs, f, shown)
        missing = [c for c in wanted if c not in t.column_names and c != "timestamp"]
        if missing:
            raise invalid(f"{shown}: {f.rsplit('/', 1)[-1]} lacks column(s) {', '.join(missing)}")
        parts.append(t.select([c for c in wanted if c in t.column_names]))
    try:
        return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    except pa.ArrowInvalid as e:
        raise corrupt(f"{shown}: data files disagree on their columns ({e})") from None


def _select_episodes(table: pa.Table, wanted: Sequence[int], path) -> pa.Table:
    ep = _ints(table, "episode_index", path)
    want = np.asarray(sorted(set(int(e) for e in wanted)), np.int64)
    absent = np.setdiff1d(want, ep)
    if absent.size:
        raise invalid(f"{path} has no episode {int(absent[0])}; it holds episodes {int(ep.min())}-{int(ep.max())}"
                      if ep.size else f"{path} has no frames")
    return table.filter(pa.array(np.isin(ep, want)))


def _read_tasks(fs, root: str, shown: str) -> list[str]:
    p = f"{root.rstrip('/')}/meta/tasks.parquet"
    if not fs.exists(p):
        raise invalid(f"{shown} has no meta/tasks.parquet; it maps task_index to instruction text")
    t = read_parquet(fs, p, shown)
    # LeRobot writes the task text as the (pandas) index; we write it as a column.
    text_col = next((c for c in ("task", "__index_level_0__") if c in t.column_names), None)
    if text_col is None or "task_index" not in t.column_names:
        raise corrupt(f"{shown}: meta/tasks.parquet needs columns task_index and task (got {t.column_names})")
    idx = np.asarray(t.column("task_index").to_numpy(zero_copy_only=False), np.int64)
    text = t.column(text_col).to_pylist()
    tasks = [""] * (int(idx.max()) + 1 if idx.size else 0)
    for i, s in zip(idx, text):
        tasks[i] = str(s)
    return tasks


def _flat_values(col: "pa.ChunkedArray | pa.Array") -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        if arr.null_count:
            raise ValueError("null entries")
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False)


def _matrix(table: pa.Table, key: str, features: dict, path) -> np.ndarray:
    shape = features[key].get("shape")
    if not isinstance(shape, list) or len(shape) != 1:
        raise invalid(f"{path}: feature {key!r} must have a 1-D shape in meta/info.json, got {shape!r}")
    try:
        flat = _flat_values(table.column(key)).astype(np.float32)
    except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise corrupt(f"{path}: column {key!r} is not a list of numbers ({e})") from None
    n = table.num_rows
    lengths = _row_lengths(table.column(key))
    if lengths is not None and lengths.size and lengths.min() != lengths.max():
        row = int(np.argmax(lengths != shape[0])) if (lengths != shape[0]).any() else 0
        raise invalid(f"{path}: column {key!r} is ragged: frame {row} holds {int(lengths[row])} values where meta/info.json "
                      f"declares shape {shape}; every frame needs {shape[0]} (fix the column or the declared shape)")
    if flat.size != n * shape[0]:
        raise invalid(f"{path}: column {key!r} holds {flat.size} values for {n} frames; meta/info.json "
                      f"declares shape {shape} (expected {n * shape[0]}); fix the column or the declared shape")
    out = flat.reshape(n, shape[0])
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise invalid(f"{path}: column {key!r} holds NaN or inf (first at frame {row}, {int((~finite).sum())} frame(s) "
                      "in all); a demo needs finite numbers, so fix or drop those frames")
    return out


def _row_lengths(col: "pa.ChunkedArray") -> "np.ndarray | None":
    """Values per row of a list column (None for other types), so rows of unequal length are caught
    even when their total happens to match."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        return None
    return np.asarray(pa.compute.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False), np.int64)


def _ints(table: pa.Table, key: str, path) -> np.ndarray:
    try:
        return np.asarray(_flat_values(table.column(key)), np.int64).reshape(table.num_rows)
    except (ValueError, TypeError) as e:
        raise corrupt(f"{path}: column {key!r} must hold one integer per frame ({e})") from None


def _images(col: pa.ChunkedArray, feature: dict, n: int, path, key: str) -> np.ndarray:
    shape = feature.get("shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise invalid(f"{path}: feature {key!r} must declare a 3-D shape (H, W, C) in meta/info.json, got {shape!r}")
    names = feature.get("names") or []
    channels_first = (str(names[0]).startswith("channel") if names
                      else shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4))
    typ = col.type
    if pa.types.is_struct(typ):
        imgs = np.stack([_decode_png(row, path, key) for row in col.to_pylist()]) if n else np.zeros((0, 1, 1, 3), np.uint8)
        channels_first = False
    else:
        try:
            flat = _flat_values(col)
        except (ValueError, pa.ArrowInvalid) as e:
            raise corrupt(f"{path}: column {key!r} is not an image array ({e})") from None
        if flat.size != n * int(np.prod(shape)):
            raise invalid(f"{path}: column {key!r} holds {flat.size} values for {n} frames; meta/info.json "
                          f"declares shape {shape} (expected {n * int(np.prod(shape))}); fix the column or the shape")
        imgs = flat.reshape((n,) + tuple(shape))
        if channels_first:
            imgs = imgs.transpose(0, 2, 3, 1)
    if imgs.dtype.kind == "f":
        imgs = np.clip(imgs * 255.0 + 0.5 if imgs.max(initial=0) <= 1.0 else imgs, 0, 255)
    imgs = imgs.astype(np.uint8)
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, axis=-1)
    elif imgs.shape[-1] == 4:
        imgs = imgs[..., :3]
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise invalid(f"{path}: images of {key!r} have shape {imgs.shape[1:]}; expected (H, W, 3)")
    return np.ascontiguousarray(imgs)


def _check_expected(d: DemoData, path, state_dim, action_dim, image_shape) -> None:
    if state_dim is not None and d.state.shape[1] != state_dim:
        raise invalid(f"{path}: observation.state has {d.state.shape[1]} values per frame, the policy needs "
                      f"{state_dim}; convert the dataset or pick a policy with that state size")
    if action_dim is not None and d.action.shape[1] != action_dim:
        raise invalid(f"{path}: action has {d.action.shape[1]} values per frame, the policy needs {action_dim}; "
                      f"convert the dataset or pick a policy with that action size")
    if image_shape is not None and tuple(d.images.shape[1:3]) != tuple(image_shape):
        raise invalid(f"{path}: images are {d.images.shape[1]}x{d.images.shape[2]}, the policy needs "
                      f"{image_shape[0]}x{image_shape[1]}; resize the dataset (simulator demos: `retain demos collect --image-size {image_shape[0]}`) or configure the policy")


# -- a small PNG decoder, so LeRobot's image struct reads without Pillow ------------------------------
def _decode_png(row: Any, path, key: str) -> np.ndarray:
    data = row.get("bytes") if isinstance(row, dict) else None
    if not data:
        raise invalid(f"{path}: an image in {key!r} has no embedded bytes (only a path); embed the images")
    try:
        return _png_to_array(data)
    except (ValueError, zlib.error, struct.error) as e:
        raise corrupt(f"{path}: an image in {key!r} is not a readable 8-bit PNG ({e})") from None


def _png_to_array(data: bytes) -> np.ndarray:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if hdr is None:
        raise ValueError("no IHDR")
    w, h, depth, ctype_, _, _, interlace = hdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype_)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {ctype_}, interlace {interlace})")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    stride = w * channels
    rows = raw.reshape(h, stride + 1)
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:
            cur = np.zeros(stride, np.int32)
            for x in range(stride):
                left = cur[x - channels] if x >= channels else 0
                up, ul = prev[x], (prev[x - channels] if x >= channels else 0)
                if f == 1:
                    pred = left
                elif f == 3:
                    pred = (left + up) // 2
                elif f == 4:
                    p = left + up - ul
                    pa_, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa_ <= pb and pa_ <= pc else up if pb <= pc else ul
                else:
                    raise ValueError(f"bad filter {f}")
                cur[x] = (line[x] + pred) & 255
        out[y] = cur
        prev = cur
    img = out.astype(np.uint8).reshape(h, w, channels)
    if channels == 2:   # grey + alpha
        img = img[..., :1]
    return img

