"""LeRobot v3 video features: MP4 files addressed by meta/episodes and timestamps, written and read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from registry.errors import Code, RegistryError
from retain.data import Episode, read_dataset, write_dataset

av = pytest.importorskip("av")  # the [video] extra, part of [test]

KEY = "observation.images.top"
MP4 = f"videos/{KEY}/chunk-000/file-000.mp4"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
ROOT = Path(__file__).resolve().parents[1]


def smooth_episodes(n=3, size=32, seed=0) -> list[Episode]:
    """Episodes whose frames change smoothly, as camera streams do (video codecs are lossy)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    eps = []
    for i in range(n):
        t = 6 + 2 * i
        frames = np.stack([np.stack([(xx * 4 + k * 9 + 40 * i) % 256, (yy * 5 + k * 3) % 256,
                                     np.full_like(xx, 60 * i + 7 * k) % 256], -1) for k in range(t)]).astype(np.uint8)
        eps.append(Episode(frames, rng.standard_normal((t, 5)).astype(np.float32),
                           rng.uniform(-1, 1, (t, 4)).astype(np.float32), f"task {i % 2}"))
    return eps


def test_video_round_trip_follows_lerobot_v3_layout(tmp_path):
    eps = smooth_episodes()
    root = write_dataset(tmp_path / "ds", eps, fps=10, video=True)
    info = json.loads((root / "meta/info.json").read_text())
    feat = info["features"][KEY]
    assert feat["dtype"] == "video" and feat["shape"] == [32, 32, 3]
    assert feat["info"]["video.codec"] == "av1" and feat["info"]["video.pix_fmt"] == "yuv420p"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (root / MP4).is_file()
    assert KEY not in pq.read_table(root / "data/chunk-000/file-000.parquet").column_names
    ep = pq.read_table(root / EPISODES).to_pydict()
    assert ep[f"videos/{KEY}/file_index"] == [0, 0, 0]
    assert ep[f"videos/{KEY}/from_timestamp"] == pytest.approx([0.0, 0.6, 1.4])
    assert ep[f"videos/{KEY}/to_timestamp"] == pytest.approx([0.6, 1.4, 2.4])
    d = read_dataset(root)
    truth = np.concatenate([e.images for e in eps]).astype(np.int16)
    assert d.images.shape == truth.shape and d.images.dtype == np.uint8
    err = np.abs(d.images.astype(np.int16) - truth)
    assert err.mean() < 6, err.mean()   # lossy, but each frame is its own frame, not a neighbour's
    assert np.array_equal(d.state, np.concatenate([e.state for e in eps]))
    assert d.episode_index.tolist() == [0] * 6 + [1] * 8 + [2] * 10


def test_decoding_and_encoding_are_deterministic(tmp_path):
    eps = smooth_episodes()
    a = write_dataset(tmp_path / "a", eps, fps=10, video=True)
    b = write_dataset(tmp_path / "b", eps, fps=10, video=True)
    assert (a / MP4).read_bytes() == (b / MP4).read_bytes()
    assert np.array_equal(read_dataset(a).images, read_dataset(a).images)


def test_only_the_selected_episodes_are_decoded_and_they_match(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(4), fps=10, video=True)
    full = read_dataset(root)
    part = read_dataset(root, episodes=[2])
    assert part.num_frames == 10 and set(part.episode_index.tolist()) == {2}
    assert np.array_equal(part.images, full.images[full.episode_index == 2])
    with pytest.raises(RegistryError, match="has no episode 9"):
        read_dataset(root, episodes=[9])


def test_several_files_h264_and_an_fsspec_url(tmp_path):
    eps = smooth_episodes(4)
    root = write_dataset(tmp_path / "ds", eps, fps=10, video=True, vcodec="h264", video_file_mb=1e-9)
    files = sorted(p.name for p in (root / f"videos/{KEY}/chunk-000").iterdir())
    assert len(files) > 1, files
    ep = pq.read_table(root / EPISODES).to_pydict()
    assert ep[f"videos/{KEY}/file_index"] == sorted(ep[f"videos/{KEY}/file_index"])
    assert json.loads((root / "meta/info.json").read_text())["features"][KEY]["info"]["video.codec"] == "h264"
    d = read_dataset(root)
    assert np.abs(d.images.astype(np.int16) - np.concatenate([e.images for e in eps])).mean() < 6
    fs = fsspec.filesystem("memory")
    for f in root.rglob("*"):
        if f.is_file():
            fs.pipe(f"/vid/ds/{f.relative_to(root).as_posix()}", f.read_bytes())
    assert np.array_equal(read_dataset("memory://vid/ds").images, d.images)


def _fails(root, code: Code, pattern: str):
    with pytest.raises(RegistryError, match=pattern) as e:
        read_dataset(root)
    assert e.value.code == code
    assert "\n" not in str(e.value)


def test_a_missing_video_file(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    (root / MP4).unlink()
    _fails(root, Code.NOT_FOUND, rf"video file {MP4} \(camera {KEY}, episode 0-2\) is missing; fetch the dataset's videos/")


def test_a_corrupt_video(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    data = (root / MP4).read_bytes()
    (root / MP4).write_bytes(data[: len(data) // 3])
    _fails(root, Code.CORRUPT, "is not a readable MP4 video .*re-download or re-encode it")
    (root / MP4).write_bytes(b"\x00" * 64)
    _fails(root, Code.CORRUPT, "is not a readable MP4 video")


def test_timestamps_outside_a_video(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    ts = data.column("timestamp").to_numpy().copy()
    ts[3] += 50.0
    pq.write_table(data.set_column(data.column_names.index("timestamp"), "timestamp", pa.array(ts)),
                   root / "data/chunk-000/file-000.parquet")
    _fails(root, Code.INVALID_VALUE, r"frame 3 of episode 0 has timestamp 50.3000 s, outside its .* video span")
    # meta/episodes claims more video than the file holds: found when decoding
    root2 = write_dataset(tmp_path / "ds2", smooth_episodes(), fps=10, video=True)
    ep = pq.read_table(root2 / EPISODES)
    for col, shift in ((f"videos/{KEY}/from_timestamp", 5.0), (f"videos/{KEY}/to_timestamp", 5.0)):
        vals = np.array(ep.column(col).to_pylist()) + shift
        ep = ep.set_column(ep.column_names.index(col), col, pa.array(vals))
    pq.write_table(ep, root2 / EPISODES)
    _fails(root2, Code.INVALID_VALUE, rf"{MP4} has no frame within 0.0001 s of 5.0000 s \(episode 0, frame 0\); "
                                      r"its frames run from .* do not match the video")


def test_a_feature_declared_as_video_with_no_file(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    ep = pq.read_table(root / EPISODES)
    pq.write_table(ep.select([c for c in ep.column_names if not c.startswith("videos/")]), root / EPISODES)
    _fails(root, Code.INVALID_VALUE, f"feature '{KEY}' is declared as video but meta/episodes names no file for it")
    root2 = write_dataset(tmp_path / "ds2", smooth_episodes(), fps=10, video=True)
    info = json.loads((root2 / "meta/info.json").read_text())
    info["video_path"] = None
    (root2 / "meta/info.json").write_text(json.dumps(info))
    _fails(root2, Code.INVALID_VALUE, f"feature '{KEY}' is declared as video but meta/info.json has no video_path")


def test_an_older_layout_or_a_foreign_video_path_is_one_line(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    info = json.loads((root / "meta/info.json").read_text())
    info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    (root / "meta/info.json").write_text(json.dumps(info))
    _fails(root, Code.INVALID_VALUE, r"video_path .* is not a v3.0 template .*KeyError: 'episode_chunk'")
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    _fails(root, Code.INVALID_VALUE, "is a LeRobot v2.1 dataset .*convert_dataset_v21_to_v30")


def test_an_unsupported_codec(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    n = sum(e.images.shape[0] for e in smooth_episodes())
    with av.open(str(root / MP4), "w", format="mp4") as out:   # MPEG-4 Part 2: decodable, but not LeRobot's
        s = out.add_stream("mpeg4", rate=10)
        s.pix_fmt, s.width, s.height = "yuv420p", 32, 32
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    _fails(root, Code.INVALID_VALUE, "video codec 'mpeg4' is not supported; re-encode it as AV1")


def test_writer_refuses_odd_frame_sizes_and_leaves_nothing(tmp_path):
    eps = [Episode(np.zeros((3, 9, 10, 3), np.uint8), np.zeros((3, 5), np.float32), np.zeros((3, 4), np.float32), "x")]
    with pytest.raises(RegistryError, match="even width and height"):
        write_dataset(tmp_path / "odd", eps, fps=10, video=True)
    assert list(tmp_path.iterdir()) == []


def test_demos_collect_video_cli(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "v"
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demos", "collect", "plates", "-n", "2", "--image-size", "16",
                        "--video", "-o", str(out), "--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["video"] == "av1" and (out / MP4).is_file()
    d = read_dataset(out)
    assert d.images.shape[1:] == (16, 16, 3) and d.num_episodes == 2
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demos", "show", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "camera top 16x16x3 (av1 video)" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demos", "collect", "plates", "-n", "2", "--image-size", "15",
                        "--video", "-o", str(tmp_path / "w")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 4 and r.stderr.strip() == "Error: --video needs an even --image-size (yuv420p video), got 15"
    assert not (tmp_path / "w").exists()


def test_decoding_costs_only_the_requested_stretches(tmp_path):
    from retain.data.video import decode_at

    eps = smooth_episodes(1)
    long = Episode(np.concatenate([eps[0].images] * 50), np.zeros((300, 5), np.float32), np.zeros((300, 4), np.float32), "x")
    root = write_dataset(tmp_path / "ds", [long], fps=10, video=True)   # one 30 s video, a keyframe every 2 frames
    opener = lambda: open(root / MP4, "rb")   # noqa: E731
    everything = decode_at(opener, "v", np.arange(300) / 10, 1e-4)
    assert everything.found.all() and everything.decoded == 300
    few = decode_at(opener, "v", np.array([20.0, 1.0, 1.1]), 1e-4)
    assert few.found.all() and few.decoded <= 8, few.decoded   # two seeks, not 300 frames
    assert np.array_equal(few.frames, everything.frames[[200, 10, 11]])
    stats = json.loads((root / "meta/stats.json").read_text())[KEY]
    assert np.asarray(stats["mean"]).shape == (3, 1, 1) and 0 <= np.min(stats["min"]) <= np.max(stats["max"]) <= 1


def test_without_pyav_a_video_dataset_says_how_to_install_it(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    monkeypatch.setitem(sys.modules, "av", None)   # as if the [video] extra were not installed
    _fails(root, Code.INVALID_VALUE, r"needs PyAV; install it with: pip install 'retain-registry\[video\]'")
    with pytest.raises(RegistryError, match="needs PyAV"):
        write_dataset(tmp_path / "w", smooth_episodes(), fps=10, video=True)
    assert not (tmp_path / "w").exists()


def test_reading_without_pixels_checks_the_videos_but_decodes_nothing(tmp_path):
    root = write_dataset(tmp_path / "ds", smooth_episodes(), fps=10, video=True)
    d = read_dataset(root, decode_images=False)
    assert d.images.shape == (24, 0, 0, 3) and d.num_episodes == 3 and d.tasks == ["task 0", "task 1"]
    assert np.array_equal(d.state, read_dataset(root).state)
    (root / MP4).write_bytes(b"\x00" * 64)   # damaged, but nothing is decoded
    assert read_dataset(root, decode_images=False).num_frames == 24
    (root / MP4).unlink()
    with pytest.raises(RegistryError, match="is missing"):
        read_dataset(root, decode_images=False)
    plain = write_dataset(tmp_path / "plain", smooth_episodes(), fps=10)   # pixels in the parquet: column not read
    assert read_dataset(plain, decode_images=False).images.shape == (24, 0, 0, 3)
