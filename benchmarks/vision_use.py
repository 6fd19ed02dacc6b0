"""Does a policy use its camera? The first thing to check before reading a testbed result.

A base that ignores its images can still score on narrow ID settings (it memorises positions
from the robot state and the words), so a low OOD score says nothing about merging until this
passes. On held-out expert frames of the pretraining tasks it compares the policy's action
chunks with the expert's, once with each frame's own image and once with the images rolled by
one place across the batch (every frame gets another scene's image; state and words stay):

- l1 / l1_shuffled: mean |predicted - expert| over unpadded chunk steps;
- image_gain: l1_shuffled - l1 (0 means the image changes nothing the loss can see);
- action_change: mean |pred(own image) - pred(other image)| / mean |pred(own image)|.

    python -m benchmarks.vision_use                          # the shipped base
    python -m benchmarks.vision_use --base DIR --base-config cfg.json --setting id
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks.base_args import add_base_args, resolve_base, run_cleanly


def measure(model, adapter, frames, chunk: int, batch: int = 256) -> dict[str, float]:
    """Image-use figures of `model` on `frames` (DemoFrames), in batches of `batch` frames."""
    import torch

    from retain.frames import chunk_targets

    idx_all, pad_all = chunk_targets(frames.episode_index, chunk)
    err = err_shuf = change = size = kept = 0.0
    for start in range(0, len(frames), batch):
        sl = slice(start, min(start + batch, len(frames)))
        if sl.stop - sl.start < 2:
            break
        images = torch.from_numpy(frames.images[sl])
        state = torch.from_numpy(frames.state[sl])
        tokens, mask = model.tokenize([frames.tasks[t] for t in frames.task_index[sl]])
        target = torch.from_numpy(frames.action[idx_all[sl]])
        keep = (~torch.from_numpy(pad_all[sl])).float()[..., None]
        with torch.no_grad():
            own = model(images, state, tokens, mask)
            other = model(images.roll(1, 0), state, tokens, mask)
        err += float(((own - target).abs() * keep).sum())
        err_shuf += float(((other - target).abs() * keep).sum())
        change += float(((own - other).abs() * keep).sum())
        size += float((own.abs() * keep).sum())
        kept += float(keep.sum()) * own.shape[-1]
    l1, l1s = err / kept, err_shuf / kept
    return {"l1": l1, "l1_shuffled": l1s, "image_gain": l1s - l1, "action_change": change / max(size, 1e-12)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_args(ap)
    ap.add_argument("--settings", nargs="+", default=["pretrain", "id"], help="settings the held-out frames come from")
    ap.add_argument("--episodes", type=int, default=300, help="held-out expert episodes per setting")
    ap.add_argument("--seed", type=int, default=4242, help="seed of the held-out episodes (not a training seed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from retain import sim
    from retain.pretrain import collect_frames

    torch.set_num_threads(args.threads)
    base_dir, adapter, config = resolve_base(args)
    model = adapter.load(base_dir, config)
    rows = []
    for setting in args.settings:
        frames = collect_frames(list(sim.PRETRAIN_TASKS), setting, args.episodes, args.seed, image_size=model.cfg.image_size)
        rows.append({"setting": setting, "frames": len(frames), **measure(model, adapter, frames, model.cfg.chunk)})
    print(json.dumps({"base": str(base_dir), "results": rows}, indent=2))
    print(f"\n{'setting':<12}{'frames':>8}{'l1':>9}{'l1 shuffled':>13}{'image gain':>12}{'action change':>15}")
    for r in rows:
        print(f"{r['setting']:<12}{r['frames']:>8}{r['l1']:>9.4f}{r['l1_shuffled']:>13.4f}{r['image_gain']:>12.2e}{r['action_change']:>14.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
