"""What a base does on skills before any finetune: success per split, probes included.

The testbed's alpha 0 row answers this too, but only after a finetune per seed; this is the quick
look at a base's ceiling, e.g. place-box-5 (place-crate-5's scene named with the word the base
knows) against place-crate-5 and against a pretraining task's own ID scene.

    nice python -m benchmarks.base_skills --base /tmp/dagbase/weights --base-config /tmp/dagbase/policy_config.json \\
        --skills place-box-5 place-crate-5 put-in-box --episodes 200

Prints one line per skill as it finishes, then a JSON object {skill: {split: success %}}.
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks.base_args import add_base_args, resolve_base, run_cleanly

SPLITS = ["id", "ood:position", "ood:background", "ood:distractor", "ood:viewpoint", "ood:language"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skills", nargs="+", default=["place-box-5", "place-crate-5"])
    ap.add_argument("--splits", nargs="+", default=SPLITS,
                    help="settings to evaluate each skill in (a pretraining task's OOD families need not exist: use id)")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    add_base_args(ap)
    args = ap.parse_args(argv)

    from benchmarks import testbed_probes
    import torch

    from retain.evaluate import check_task, evaluate_splits
    from retain.sim.settings import get_setting

    testbed_probes.register()
    for skill in args.skills:
        check_task(skill)
    for split in args.splits:
        get_setting(split)
    torch.set_num_threads(args.threads)
    weights, adapter, config = resolve_base(args)
    model = adapter.load(str(weights), config)
    out: dict[str, dict[str, float]] = {}
    for skill in args.skills:
        results = evaluate_splits(model, adapter, skill, args.splits, args.episodes, args.seed)
        out[skill] = {r.setting: round(100 * r.rate, 1) for r in results}
        print(f"{skill:>16}  " + "  ".join(f"{s}={v:.1f}" for s, v in out[skill].items()), flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
