"""Compatibility with the real `lerobot` package, both ways, on LeRobot v3 video datasets.

    python -m benchmarks.lerobot_compat --lerobot-python /work/venvs/lerobot-pinned/bin/python [--episodes 3] [--image-size 64]

lerobot pins torch<2.11 (we pin 2.13), so it lives in its own virtual environment (docs/lerobot.md
says how to make one); its side runs there as benchmarks/lerobot_compat_child.py. From the
simulator's expert demos (the ground truth frames) this:
  1. lerobot writes a dataset with its own writer (LeRobotDataset.create / add_frame / save_episode,
     AV1 video) and reads it back with its own reader (LeRobotDataset[i], its default decoder);
     our read_dataset reads the same folder; the two are compared frame by frame.
  2. our write_dataset(video=True) writes a dataset; lerobot's LeRobotDataset loads it and reads every
     frame; compared with our own reading of it. lerobot also reads it as its trainers do
     (delta_timestamps: the previous image and a 3-step action chunk per frame), each window checked
     against the frames read one by one (the same check on lerobot's own dataset is the control).
Prints JSON and a short table; exits 1 when either direction disagrees (state, action, indices or
task text not equal, or a pixel more than --max-pixel-diff apart).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "benchmarks" / "lerobot_compat_child.py"


def child(py: str, *args: str, backend: str | None = None) -> None:
    env = {**os.environ, "RETAIN_LEROBOT_VIDEO_BACKEND": backend or ""}
    r = subprocess.run([py, str(CHILD), *args], capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"lerobot side failed ({' '.join(args[:1])}): {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")


def compare(ours, theirs: dict, truth: dict) -> dict:
    """Our DemoData against lerobot's reading of the same dataset, and both against the true frames."""
    img, ref = ours.images.astype(np.int16), theirs["images"].astype(np.int16)
    return {
        "frames": int(ours.num_frames),
        "state_action_equal": bool(np.array_equal(ours.state, theirs["state"]) and np.array_equal(ours.action, theirs["action"])),
        "indices_equal": bool(np.array_equal(ours.episode_index, theirs["episode_index"])
                              and np.array_equal(ours.frame_index, theirs["frame_index"])),
        "tasks_equal": ours.instructions() == [str(t) for t in theirs["task"]],
        "pixels_identical_fraction": float((img == ref).mean()) if img.shape == ref.shape else 0.0,
        "pixel_max_abs_diff": int(np.abs(img - ref).max()) if img.shape == ref.shape else -1,
        "ours_vs_truth_mean_abs": float(np.abs(img - truth["images"]).mean()),
        "lerobot_vs_truth_mean_abs": float(np.abs(ref - truth["images"]).mean()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lerobot-python", required=True, help="python of a virtual environment with lerobot installed")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--task", default="plates")
    ap.add_argument("--lerobot-video-backend", choices=["torchcodec", "pyav"], default=None,
                    help="lerobot's decoder (default: lerobot's own default, torchcodec where it loads)")
    ap.add_argument("--max-pixel-diff", type=int, default=2, help="largest pixel difference still called compatible")
    ap.add_argument("--json", action="store_true", help="print only the JSON")
    args = ap.parse_args()

    from retain.data import read_dataset, write_dataset
    from retain.sim.demos import FPS, collect_episodes

    versions = subprocess.run([args.lerobot_python, "-c", "import lerobot, torch, av; print(lerobot.__version__, torch.__version__, av.__version__)"],
                              capture_output=True, text=True)
    if versions.returncode:
        sys.exit(f"{args.lerobot_python} cannot import lerobot; make its environment as docs/lerobot.md says")
    lr_version, lr_torch, lr_av = versions.stdout.split()
    import av

    eps = collect_episodes(args.task, args.episodes, "id", 0, image_size=args.image_size)
    truth = {"images": np.concatenate([e.images for e in eps]).astype(np.int16)}
    with tempfile.TemporaryDirectory(prefix="retain-lerobot-compat-") as tmp:
        work = Path(tmp)
        np.savez(work / "frames.npz", images=np.concatenate([e.images for e in eps]), state=np.concatenate([e.state for e in eps]),
                 action=np.concatenate([e.action for e in eps]), lengths=np.array([len(e.action) for e in eps]),
                 tasks=np.array([e.instruction for e in eps]), fps=int(FPS))
        child(args.lerobot_python, "write", str(work / "by-lerobot"), str(work / "frames.npz"))
        child(args.lerobot_python, "read", str(work / "by-lerobot"), str(work / "lerobot-reads-lerobot.npz"), backend=args.lerobot_video_backend)
        t0 = time.perf_counter()
        ours = read_dataset(work / "by-lerobot")
        read_s = time.perf_counter() - t0
        theirs = dict(np.load(work / "lerobot-reads-lerobot.npz"))
        meta = json.loads(str(theirs.pop("meta")))
        we_read_theirs = {**compare(ours, theirs, truth), "our_read_s": round(read_s, 3)}

        t0 = time.perf_counter()
        write_dataset(work / "by-retain", eps, FPS, video=True)
        write_s = time.perf_counter() - t0
        child(args.lerobot_python, "read", str(work / "by-retain"), str(work / "lerobot-reads-retain.npz"), backend=args.lerobot_video_backend)
        theirs = dict(np.load(work / "lerobot-reads-retain.npz"))
        theirs.pop("meta")
        they_read_ours = {**compare(read_dataset(work / "by-retain"), theirs, truth), "our_write_s": round(write_s, 3)}
        for name, res in (("by-lerobot", we_read_theirs), ("by-retain", they_read_ours)):
            child(args.lerobot_python, "chunks", str(work / name), str(work / f"{name}-chunks.json"), backend=args.lerobot_video_backend)
            res["lerobot_training_windows"] = json.loads((work / f"{name}-chunks.json").read_text())

    def ok(r: dict) -> bool:
        w = r["lerobot_training_windows"]
        return (r["state_action_equal"] and r["indices_equal"] and r["tasks_equal"] and 0 <= r["pixel_max_abs_diff"] <= args.max_pixel_diff
                and w["image_windows_wrong"] == 0 and w["action_steps_wrong"] == 0)

    res = {"lerobot": lr_version, "lerobot_torch": lr_torch, "lerobot_av": lr_av, "lerobot_video_backend": meta["video_backend"],
           "our_av": av.__version__, "task": args.task, "episodes": args.episodes, "image_size": args.image_size,
           "retain_reads_lerobot": we_read_theirs, "lerobot_reads_retain": they_read_ours,
           "compatible": ok(we_read_theirs) and ok(they_read_ours)}
    print(json.dumps(res, indent=2))
    if not args.json:
        print(f"\nlerobot {lr_version} (torch {lr_torch}, decoder {meta['video_backend']}) vs retain (PyAV {av.__version__}), "
              f"{args.episodes} episodes of {args.task} at {args.image_size}px")
        print(f"{'direction':<22}{'frames':>7}{'meta equal':>11}{'identical px':>13}{'max diff':>9}{'err ours':>9}"
              f"{'err lerobot':>12}{'windows wrong':>14}")
        for name, r in (("retain reads lerobot", we_read_theirs), ("lerobot reads retain", they_read_ours)):
            meta_ok = r["state_action_equal"] and r["indices_equal"] and r["tasks_equal"]
            w = r["lerobot_training_windows"]
            print(f"{name:<22}{r['frames']:>7}{str(meta_ok):>11}{100 * r['pixels_identical_fraction']:>12.2f}%"
                  f"{r['pixel_max_abs_diff']:>9}{r['ours_vs_truth_mean_abs']:>9.2f}{r['lerobot_vs_truth_mean_abs']:>12.2f}"
                  f"{w['image_windows_wrong'] + w['action_steps_wrong']:>8}/{w['windows']}")
        print("compatible" if res["compatible"] else "NOT compatible")
    return 0 if res["compatible"] else 1


if __name__ == "__main__":
    sys.exit(main())
