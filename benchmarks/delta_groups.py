"""Where does a finetune's delta live? Which parameters carry the new skill, and which cost the
generalist suite?

It finetunes the base on one skill's narrow demos as the testbed does (learn's recipe), then for
each parameter group scores two hybrids on ID, the given OOD families and the generalist suite:
- "ft, G from base": the finetune with group G put back to the base (what G's delta adds);
- "base, G from ft": the base with only G's delta applied (what G's delta does on its own).
A group is every parameter whose name starts with one of its prefixes; by default one group per
first two name parts (vision.convs, language.blocks, action.blocks, ...), which is finer than
the three modalities a merge alpha can tell apart.

With `--alpha A` the finetune's place is taken by the merge base + A * delta, so "merge, G from
base" is what the generalist suite would get at that alpha if G's delta never reached it (as if G
were routed per instruction). `--probe` adds benchmarks/testbed_probes.py's skills (box-back, ...).

    nice python -m benchmarks.delta_groups --skill plates --seed 0
    nice python -m benchmarks.delta_groups --skill plates --groups vision.convs language action.blocks,action.norm
    nice python -m benchmarks.delta_groups --probe --skill box-back --alpha 0.75 --families --groups action action,language
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks.base_args import add_base_args, add_finetune_args, resolve_base, run_cleanly


def default_groups(names: list[str]) -> dict[str, tuple[str, ...]]:
    """One group per distinct first-two-parts prefix of the parameter names, in name order."""
    groups: dict[str, tuple[str, ...]] = {}
    for name in names:
        key = ".".join(name.split(".")[:2])
        groups.setdefault(key, (key + ".",) if key != name else (key,))
    return groups


def parse_groups(specs: list[str], names: list[str]) -> dict[str, tuple[str, ...]]:
    """--groups values ("vision.convs" or "action.blocks,action.norm") as {label: prefixes}; a
    prefix that matches no parameter is an error, since it would silently measure nothing."""
    from registry.errors import invalid

    groups = {}
    for spec in specs:
        prefixes = tuple(p for p in spec.split(",") if p)
        for p in prefixes:
            if not any(n.startswith(p) for n in names):
                raise invalid(f"--groups prefix {p!r} matches no parameter; use names such as "
                              f"{', '.join(sorted(default_groups(names)))}")
        groups[spec] = prefixes
    return groups


def hybrid(into: dict, source: dict, prefixes: tuple[str, ...]) -> dict:
    """`into` with every tensor whose name starts with one of `prefixes` taken from `source`."""
    return {k: (source[k] if k.startswith(prefixes) else v) for k, v in into.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_args(ap)
    ap.add_argument("--skill", default="plates")
    ap.add_argument("--seed", type=int, default=0, help="finetune seed; demos and episodes follow testbed.py's seeding")
    add_finetune_args(ap)
    ap.add_argument("--demos", type=int, default=50)
    ap.add_argument("--episodes", type=int, default=100, help="episodes per skill split and for the generalist suite")
    ap.add_argument("--families", nargs="*", default=["ood:position", "ood:background"], help="OOD families ('ood': all of them)")
    ap.add_argument("--groups", nargs="*", default=None, help="parameter groups, each comma-joined name prefixes (default: one per first two name parts)")
    ap.add_argument("--alpha", type=float, default=1.0, help="compare against the merge base + alpha * delta (1: the finetune)")
    ap.add_argument("--probe", action="store_true", help="also know benchmarks/testbed_probes.py's skills")
    args = ap.parse_args(argv)
    if not 0.0 < args.alpha <= 1.0:
        ap.error(f"--alpha {args.alpha} must be in (0, 1]: the share of the finetune's delta merged")
    if args.probe:
        from benchmarks import testbed_probes

        testbed_probes.register()

    import torch

    from retain.evaluate import GENERALIST, check_task, evaluate, settings_for
    from retain.pretrain import collect_frames
    from retain.train import train_bc

    check_task(args.skill)
    # checked before the finetune, so a misspelt family costs no minute of training
    splits = ["id", *(s for f in args.families for s in settings_for(f, args.skill))]
    torch.set_num_threads(args.threads)
    base_dir, adapter, config = resolve_base(args)
    model = adapter.load(base_dir, config)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    groups = parse_groups(args.groups, list(base)) if args.groups else default_groups(list(base))
    demos = collect_frames([args.skill], "id", args.demos, seed=1_000 + args.seed, image_size=model.cfg.image_size)
    train_bc(model, adapter, demos, args.steps, args.lr, args.batch, args.seed, None, threads=args.threads)
    ft = {k: v.detach().clone() for k, v in model.state_dict().items()}
    top, head = ("finetune", "ft") if args.alpha == 1.0 else (f"merge {args.alpha:g}",) * 2
    if args.alpha != 1.0:
        ft = {k: base[k] + args.alpha * (ft[k] - base[k]) for k in base}
    width = max(34, 2 + max(len(f"{head}, {label} from base") for label in groups))

    def score(label: str, state: dict) -> dict:
        model.load_state_dict(state)
        row = {"model": label}
        for s in splits:
            row[s] = evaluate(model, adapter, args.skill, s, args.episodes, 10_000 + args.seed).rate
        row[GENERALIST] = evaluate(model, adapter, GENERALIST, GENERALIST, args.episodes, 10_000 + args.seed).rate
        print(f"{label:<{width}}" + "".join(f"{row[s]:>16.2f}" for s in [*splits, GENERALIST]), flush=True)
        return row

    print(f"{'model':<{width}}" + "".join(f"{s:>16}" for s in [*splits, GENERALIST]))
    rows = [score("base", base), score(top, ft)]
    for label, prefixes in groups.items():
        size = sum(v.numel() for k, v in base.items() if k.startswith(prefixes))
        rows.append({**score(f"{head}, {label} from base", hybrid(ft, base, prefixes)), "group": label, "params": size})
        rows.append({**score(f"base, {label} from ft", hybrid(base, ft, prefixes)), "group": label, "params": size})
    print(json.dumps({"args": vars(args), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
