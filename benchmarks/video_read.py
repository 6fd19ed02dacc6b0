"""What reading a LeRobot video dataset costs: write, read all, read one episode, read without pixels.

    python -m benchmarks.video_read [--episodes 10] [--length 200] [--size 224] [--vcodec av1]

Frames are a smooth synthetic camera stream (a moving gradient with noise), written as one LeRobot
v3 dataset by write_dataset(video=True) and read back by read_dataset. Prints JSON and a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np



def episodes(n: int, length: int, size: int, seed: int = 0):
    from retain.data import Episode

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for e in range(n):
        frames = np.empty((length, size, size, 3), np.uint8)
        for k in range(length):
            base = np.stack([xx + 2 * k + 30 * e, yy + k, (xx + yy) / 2 + 3 * k], -1)
            frames[k] = np.clip(base % 256 + rng.normal(0, 3, base.shape), 0, 255)
        state = rng.standard_normal((length, 8)).astype(np.float32)
        out.append(Episode(frames, state, rng.standard_normal((length, 7)).astype(np.float32), f"task {e % 3}"))
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--length", type=int, default=200, help="frames per episode")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--vcodec", default="av1", choices=["av1", "h264", "hevc"])
    args = ap.parse_args()

    import av

    from retain.data import read_dataset, write_dataset

    eps = episodes(args.episodes, args.length, args.size)
    truth = np.concatenate([e.images for e in eps])
    frames = len(truth)
    with tempfile.TemporaryDirectory(prefix="retain-video-read-") as tmp:
        root, write_s = timed(lambda: write_dataset(Path(tmp) / "ds", eps, args.fps, video=True, vcodec=args.vcodec))
        video_bytes = sum(p.stat().st_size for p in (root / "videos").rglob("*.mp4"))
        full, read_s = timed(lambda: read_dataset(root))
        one, one_s = timed(lambda: read_dataset(root, episodes=[args.episodes // 2]))
        meta, meta_s = timed(lambda: read_dataset(root, decode_images=False))
        again = read_dataset(root)
    res = {
        "frames": frames, "episodes": args.episodes, "size": args.size, "fps": args.fps, "vcodec": args.vcodec, "av": av.__version__,
        "raw_MB": round(truth.nbytes / 1e6, 1), "video_MB": round(video_bytes / 1e6, 3),
        "write_s": round(write_s, 3), "write_fps": round(frames / write_s, 1),
        "read_all_s": round(read_s, 3), "read_fps": round(frames / read_s, 1),
        "read_one_episode_s": round(one_s, 3), "one_episode_frames": one.num_frames,
        "read_without_pixels_s": round(meta_s, 3),
        "mean_abs_error": round(float(np.abs(full.images.astype(np.int16) - truth).mean()), 3),
        "deterministic": bool(np.array_equal(full.images, again.images)),
        "one_episode_equal_to_full": bool(np.array_equal(one.images, full.images[full.episode_index == args.episodes // 2])),
    }
    assert meta.images.shape == (frames, 0, 0, 3)
    print(json.dumps(res))
    print(f"\n{frames} frames ({args.episodes} episodes) at {args.size}px, {args.vcodec} (PyAV {av.__version__}): "
          f"{res['raw_MB']} MB of pixels in {res['video_MB']} MB of video")
    for name, key, extra in (("write", "write_s", f"{res['write_fps']} frames/s"), ("read all", "read_all_s", f"{res['read_fps']} frames/s"),
                             ("read one episode", "read_one_episode_s", f"{res['one_episode_frames']} frames"),
                             ("read without pixels", "read_without_pixels_s", "")):
        print(f"  {name:<20}{res[key]:>8.3f} s  {extra}")
    print(f"  mean abs error {res['mean_abs_error']}, deterministic {res['deterministic']}, "
          f"one episode = its rows of the full read {res['one_episode_equal_to_full']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
