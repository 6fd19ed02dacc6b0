"""LeRobot v3 dataset writing and reading: round trips, user variants, fsspec URLs, bad datasets."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from registry.errors import RegistryError
from retain.data import Episode, read_dataset, write_dataset


def make_episodes(n=3, h=8, w=6, s=5, a=4, seed=0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        t = 3 + i
        eps.append(Episode(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), rng.standard_normal((t, s)).astype(np.float32),
                           rng.uniform(-1, 1, (t, a)).astype(np.float32), f"task {i % 2}"))
    return eps


def test_round_trip_is_exact_and_layout_is_lerobot_v3(tmp_path):
    eps = make_episodes()
    root = write_dataset(tmp_path / "ds", eps, fps=10)
    for rel in ("meta/info.json", "meta/tasks.parquet", "meta/stats.json", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet"):
        assert (root / rel).is_file(), rel
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 12
    assert info["features"]["observation.images.top"]["shape"] == [8, 6, 3]
    cols = pq.read_table(root / "data/chunk-000/file-000.parquet").column_names
    assert set(cols) == {"observation.images.top", "observation.state", "action", "timestamp", "frame_index",
                         "episode_index", "index", "task_index"}
    d = read_dataset(root)
    assert np.array_equal(d.images, np.concatenate([e.images for e in eps]))
    assert np.array_equal(d.state, np.concatenate([e.state for e in eps]))
    assert np.array_equal(d.action, np.concatenate([e.action for e in eps]))
    assert d.episode_index.tolist() == [0] * 3 + [1] * 4 + [2] * 5
    assert d.frame_index.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert d.tasks == ["task 0", "task 1"]
    assert d.instructions()[3] == "task 1"
    assert d.num_episodes == 3 and d.fps == 10 and d.camera == "top"
    ep = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert ep["dataset_from_index"] == [0, 3, 7] and ep["dataset_to_index"] == [3, 7, 12]
    # LeRobot reads the task text as the pandas index of meta/tasks.parquet (tasks.iloc[i].name)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks.column("task").to_pylist() == ["task 0", "task 1"]


def test_reads_from_an_fsspec_url(tmp_path):
    root = write_dataset(tmp_path / "ds", make_episodes(), fps=10)
    fs = fsspec.filesystem("memory")
    for f in root.rglob("*"):
        if f.is_file():
            fs.pipe(f"/remote/ds/{f.relative_to(root).as_posix()}", f.read_bytes())
    d = read_dataset("memory://remote/ds")
    assert np.array_equal(d.state, read_dataset(root).state)
    assert np.array_equal(d.images, read_dataset(root).images)


def _png(img: np.ndarray, filt: int) -> bytes:
    h, w, c = img.shape
    rows = []
    for y in range(h):
        line = img[y].reshape(-1).astype(np.int32)
        if filt == 1:   # Sub: each byte minus the byte one pixel to the left
            enc = line - np.concatenate([np.zeros(c, np.int32), line[:-c]])
        else:
            enc = line
        rows.append(bytes([filt]) + (enc & 255).astype(np.uint8).tobytes())

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _user_dataset(root: Path, images_col: pa.Array, image_feature: dict, n: int, tasks_as_index: bool = False) -> None:
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    rng = np.random.default_rng(1)
    state = rng.standard_normal((n, 5)).astype(np.float32)
    action = rng.standard_normal((n, 4)).astype(np.float32)
    pq.write_table(pa.table({
        "observation.images.wrist": images_col,
        "observation.state": pa.array(list(state)), "action": pa.array(list(action)),
        "episode_index": pa.array([0] * n), "frame_index": pa.array(list(range(n))),
        "task_index": pa.array([0] * n), "timestamp": pa.array(np.arange(n) / 30.0),
    }), root / "data/chunk-000/file-000.parquet")
    if tasks_as_index:   # as pandas writes LeRobot's tasks table: the text is the index
        pq.write_table(pa.table({"task_index": [0], "__index_level_0__": ["open it"]}), root / "meta/tasks.parquet")
    else:
        pq.write_table(pa.table({"task_index": [0], "task": ["open it"]}), root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "fps": 30, "features": {
        "observation.images.wrist": image_feature,
        "observation.state": {"dtype": "float32", "shape": [5]}, "action": {"dtype": "float32", "shape": [4]}}}
    (root / "meta/info.json").write_text(json.dumps(info))


@pytest.mark.parametrize("filt", [0, 1])
def test_reads_lerobot_png_image_structs(tmp_path, filt):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    col = pa.array([{"bytes": _png(im, filt), "path": None} for im in imgs],
                   pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    _user_dataset(tmp_path / "u", col, {"dtype": "image", "shape": [5, 7, 3], "names": ["height", "width", "channel"]},
                  4, tasks_as_index=True)
    d = read_dataset(tmp_path / "u")
    assert np.array_equal(d.images, imgs)
    assert d.tasks == ["open it"] and d.camera == "wrist" and d.fps == 30


def test_reads_flat_channel_first_float_images(tmp_path):
    rng = np.random.default_rng(3)
    chw = rng.uniform(0, 1, (4, 3, 5, 7)).astype(np.float32)
    col = pa.array([list(x.reshape(-1)) for x in chw])
    _user_dataset(tmp_path / "u", col, {"dtype": "float32", "shape": [3, 5, 7], "names": ["channels", "height", "width"]}, 4)
    d = read_dataset(tmp_path / "u")
    expect = np.clip(chw.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(d.images, expect)


def test_bad_datasets_give_one_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        read_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="no meta/info.json"):
        read_dataset(tmp_path / "empty")
    root = write_dataset(tmp_path / "ds", make_episodes(), fps=10)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [7]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(RegistryError, match=r"'observation.state' holds 60 values for 12 frames.*shape \[7\]"):
        read_dataset(root)
    root2 = write_dataset(tmp_path / "ds2", make_episodes(), fps=10)
    with pytest.raises(RegistryError, match="action has 4 values per frame, the policy needs 7"):
        read_dataset(root2, action_dim=7)
    (root2 / "meta/info.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        read_dataset(root2)


def test_writing_is_atomic_and_refuses_to_overwrite(tmp_path, monkeypatch):
    write_dataset(tmp_path / "ds", make_episodes(), fps=10)
    with pytest.raises(RegistryError, match="already exists"):
        write_dataset(tmp_path / "ds", make_episodes(), fps=10)
    bad = make_episodes()
    bad[1] = Episode(bad[1].images, bad[1].state[:, :3], bad[1].action, "x")
    with pytest.raises(RegistryError, match="episode 1"):
        write_dataset(tmp_path / "bad", bad, fps=10)
    import retain.data.lerobot as lr

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(lr.pq, "write_table", boom)
    with pytest.raises(OSError):
        write_dataset(tmp_path / "half", make_episodes(), fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
