"""The RETAIN testbed report: does finetuning overfit, and does merging recover robustness?

For each seed and skill: collect narrow ID demos with the scripted expert, finetune ALL weights
of the base by BC, merge `theta = pre + alpha * (ft - pre)` with the merge engine for every
alpha, and evaluate each merged policy closed loop on ID, each OOD family and the generalist
suite. The evaluation seed is the same for every alpha, so alphas are compared on paired
episodes. alpha 0 is the base, alpha 1 the plain finetune.

Prints a table (mean over seeds), writes JSON with every count and a PNG of success vs alpha,
and checks the phenomenon the testbed must show (issue 4) with the thresholds printed below;
the verdict is what was measured, nothing is tuned to it.

    nice python -m benchmarks.testbed --seeds 0 1 2 --episodes 200 --out benchmarks/out/testbed
    nice python -m benchmarks.testbed --mix 0.2 ...   # co-finetuning: 20% of each batch from pretraining data
    nice python -m benchmarks.testbed --alphas 0 vision=0.5,language=0.5,action=1 1   # per-modality merges
    python -m benchmarks.testbed --pool out/s0 out/s1 out/s2 --out out/pooled   # seeds run as separate processes

An alpha is a number or the per-modality form every command accepts; the first must be 0 (the
base) and the last 1 (the plain finetune), and the verdict compares the ones between with them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.base_args import add_base_args, add_finetune_args, base_data_recipe, resolve_base, run_cleanly
from registry.records import GENERALIST

# What "the phenomenon holds" means here (issue 4), fixed before looking at any result.
NEAR_ZERO = 0.10  # base success on the new skill (ID)
FT_ID_MIN = 0.70  # plain finetune ID success
GAP_MIN = 0.25  # plain finetune: ID minus mean OOD
GEN_DROP_MIN = 0.20  # plain finetune loses at least this much generalist success vs the base
GEN_KEEP = 0.75  # the best merge keeps at least this share of the base's generalist success


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skills", nargs="+", default=["plates", "whiteboard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--alphas", nargs="+", type=_alpha_arg, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                    help="0, the merges to compare, 1; each a number or vision=..,language=..,action=..")
    ap.add_argument("--demos", type=int, default=50, help="narrow ID demos per skill")
    ap.add_argument("--episodes", type=int, default=200, help="paired episodes per skill split (ID and each OOD family)")
    ap.add_argument("--gen-episodes", type=int, default=200, help="episodes of the generalist suite")
    add_finetune_args(ap)
    ap.add_argument("--mix", type=float, default=0.0,
                    help="co-ft: share of each finetuning batch drawn from pretraining data (0: task-ft, learn's default mode)")
    ap.add_argument("--mix-episodes", type=int, default=200, help="co-ft: pretraining episodes regenerated for the mix (as learn)")
    ap.add_argument("--lr-scale", default="", help="learning-rate multipliers by module, e.g. vision=0.1 (as learn --lr-scale)")
    ap.add_argument("--report-only", action="store_true", help="re-print the table and plot from OUT/testbed.json")
    ap.add_argument("--pool", nargs="+", metavar="DIR", default=None,
                    help="report earlier runs of one sweep (the same base, finetune recipe, alphas and OOD families; "
                    "say, one seed per process) together into OUT")
    add_base_args(ap)
    ap.add_argument("--families", nargs="*", default=None, help="OOD families to evaluate (default: all)")
    ap.add_argument("--out", default="benchmarks/out/testbed")
    args = ap.parse_args(argv)
    if len(args.alphas) < 2 or args.alphas[0] != 0.0 or args.alphas[-1] != 1.0:
        ap.error("--alphas must start with 0 (the base) and end with 1 (the plain finetune)")
    if not 0.0 <= args.mix < 1.0:
        ap.error(f"--mix {args.mix} must be in [0, 1): the share of each finetuning batch from pretraining data")

    out = Path(args.out)
    if args.pool:
        pooled = pool_runs([Path(d) for d in args.pool], out)
        out.mkdir(parents=True, exist_ok=True)
        return report(out, *pooled)
    if args.report_only:
        results, run_args, timings = pool_runs([out], None)
        return report(out, results, run_args, timings)

    return report(out, *run_sweep(args, out))


def run_sweep(args: argparse.Namespace, out: Path) -> tuple[list[dict], dict, dict]:
    """Finetune each (seed, skill) from the base with the library's finetune, merge at every alpha
    with the merge engine and score each merge with the simulator's evaluation; (results, args, timings)."""
    import torch

    from retain.evaluate import ood_settings
    from retain.pretrain import collect_frames

    _recipe(args, seed=0)  # a bad --lr-scale, --steps or --lr fails before any work
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    base_dir, adapter, policy_config = resolve_base(args)
    settings = ["id", *(args.families if args.families is not None else ood_settings())]
    results: list[dict] = []
    timings: dict[str, float] = {"collect": 0.0, "finetune": 0.0, "merge": 0.0, "evaluate": 0.0}
    gen_cache: dict[tuple[int, float], list[int]] = {}  # alpha 0 (the base) is the same model for every skill
    pre = None
    if args.mix:  # the base's own pretraining distribution, regenerated as learn's co-ft does
        from retain.learn_step import pretraining_frames

        pre = pretraining_frames(base_data_recipe(args, policy_config), args.mix_episodes)
        print(f"co-ft: {args.mix:.0%} of every finetuning batch from {len(pre)} pretraining frames", flush=True)

    for seed in args.seeds:
        for skill in args.skills:
            t = time.perf_counter()
            demos = collect_frames([skill], "id", args.demos, seed=1_000 + seed, image_size=policy_config.get("image_size"))
            timings["collect"] += time.perf_counter() - t
            t = time.perf_counter()
            ft = _finetune(args, base_dir, adapter, policy_config, demos, pre, seed, work / f"ft-{skill}-{seed}")
            timings["finetune"] += time.perf_counter() - t
            print(f"[seed {seed} {skill}] {demos.episodes} demos, {len(demos)} frames; finetune loss {ft.first_loss:.3f} -> {ft.final_loss:.3f} ({ft.seconds:.0f}s)", flush=True)
            for n_alpha, alpha in enumerate(args.alphas):
                row = _score_merge(args, base_dir, adapter, policy_config, ft.checkpoint, skill, seed, alpha, settings,
                                   work / f"m-{skill}-{seed}-{n_alpha}", gen_cache, timings)
                results.append(row)
                _save(out, results, vars(args), timings)
                print(f"   alpha {_label(alpha)}  " + "  ".join(f"{s}={row[s][0] / row[s][1]:.2f}" for s in [*settings, GENERALIST]), flush=True)
            shutil.rmtree(ft.checkpoint)
    shutil.rmtree(work, ignore_errors=True)
    return results, vars(args), timings


def _recipe(args: argparse.Namespace, seed: int):
    """The finetune recipe of one seed: task-ft, or co-ft at --mix."""
    from retain.finetune import FinetuneRecipe

    return FinetuneRecipe(mode="co-ft" if args.mix else "task-ft", mix=args.mix, steps=args.steps, lr=args.lr,
                          batch_size=args.batch, seed=seed, threads=args.threads, lr_scale=args.lr_scale,
                          pretrain_episodes=args.mix_episodes)


def _finetune(args: argparse.Namespace, base_dir: Path, adapter, policy_config: dict, demos, pre, seed: int, dest: Path):
    """`learn`'s finetune (retain.finetune) of the base on `demos`, with `pre` mixed in for co-ft."""
    from retain.finetune import finetune

    config = {"policy": adapter.name, "policy_config": policy_config}
    return finetune(base_dir, config, demos, _recipe(args, seed), dest, pretrain_frames=pre)


def _score_merge(args: argparse.Namespace, base_dir: Path, adapter, policy_config: dict, ft_dir: Path, skill: str, seed: int,
                 alpha, settings: list[str], merged_dir: Path, gen_cache: dict, timings: dict) -> dict:
    """One result row: the merge at `alpha` on the skill's ID and OOD settings and on the generalist
    suite (the base's generalist counts reused across skills), with every episode's outcome."""
    from retain.evaluate import evaluate
    from retain.merge import merge_checkpoints

    eval_seed = 10_000 + seed
    t = time.perf_counter()
    merge_checkpoints(base_dir, [ft_dir], [alpha], adapter.partition_preset, merged_dir, progress=False)
    merged = adapter.load(merged_dir, policy_config)
    timings["merge"] += time.perf_counter() - t
    t = time.perf_counter()
    row = {"seed": seed, "skill": skill, "alpha": alpha}
    for s in settings:
        r = evaluate(merged, adapter, skill, s, args.episodes, eval_seed)
        row[s] = [r.successes, r.episodes]
        row.setdefault("outcomes", {})[s] = "".join("1" if o else "0" for o in r.outcomes)
    key = (seed, alpha)
    if alpha == 0.0 and key in gen_cache:
        row[GENERALIST] = gen_cache[key]
    else:
        r = evaluate(merged, adapter, GENERALIST, GENERALIST, args.gen_episodes, eval_seed)
        row[GENERALIST] = [r.successes, r.episodes]
        if alpha == 0.0:
            gen_cache[key] = row[GENERALIST]
    timings["evaluate"] += time.perf_counter() - t
    shutil.rmtree(merged_dir)
    return row


# what makes runs one sweep: the same base, finetune recipe and alphas (episode counts may differ)
_SWEEP_KEYS = ("alphas", "base", "base_config", "demos", "steps", "lr", "batch", "mix", "mix_episodes", "lr_scale")


def pool_runs(dirs: list[Path], out: Path | None) -> tuple[list[dict], dict, dict]:
    """(results, args, timings) of the runs saved in `dirs`, as one run: the same alphas and
    evaluated settings are required, and a (seed, skill) may come from one run only. `out`, where
    the pooled report goes, may not be one of them (its own run would be overwritten); None reads
    one run back to report it again in place."""
    from registry.errors import invalid

    if out is not None and out.resolve() in {d.resolve() for d in dirs}:
        raise invalid(f"--out {out} is one of the --pool folders; write the pooled report to a folder of its own")

    results: list[dict] = []
    args: dict = {}
    timings: dict[str, float] = {}
    owner: dict[tuple, Path] = {}
    for d in dirs:
        try:
            saved = json.loads((d / "testbed.json").read_text())
            run_args, rows = saved["args"], saved["results"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise invalid(f"{d}: no readable testbed.json there ({e}); give a folder a run wrote with --out") from None
        run_args = dict(run_args, alphas=[_canonical(a) for a in run_args.get("alphas", [])])
        rows = [dict(r, alpha=_canonical(r["alpha"])) for r in rows]
        settings = sorted({k for r in rows for k in r if k == "id" or k.startswith("ood:")})
        if not args:
            args, first_settings = dict(run_args, skills=[]), settings
        differs = [k for k in _SWEEP_KEYS if run_args.get(k) != args.get(k)] + (["OOD families"] if settings != first_settings else [])
        if differs:
            raise invalid(f"--pool {d}: its {', '.join(differs)} differ from {dirs[0]}'s; pool only runs of the same sweep")
        for key in {(r["seed"], r["skill"]) for r in rows}:
            if key in owner:
                raise invalid(f"--pool: seed {key[0]} of {key[1]} is in both {owner[key]} and {d}; pool each seed once")
            owner[key] = d
        results += rows
        args["skills"] += [k for k in run_args["skills"] if k not in args["skills"]]
        for k, v in saved.get("timings_s", {}).items():
            timings[k] = timings.get(k, 0.0) + v
    return results, args, timings


def _alpha_arg(text: str) -> "float | str":
    """A uniform alpha as a float (as earlier reports recorded it), a per-modality one as its canonical string."""
    from registry.errors import RegistryError
    from retain.alphas import parse_alpha

    try:
        a = parse_alpha(text)
    except RegistryError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return a.vision if a.is_uniform else str(a)


def _canonical(alpha: "float | str") -> "float | str":
    """A saved alpha in today's canonical text (reports written before it kept modality order)."""
    from retain.alphas import parse_alpha

    return str(parse_alpha(alpha, extrapolate=True)) if isinstance(alpha, str) else alpha


def _label(alpha: "float | str") -> str:
    """Short table label: 0.25, or v0.5/l0.25/a1 for a per-modality alpha."""
    if isinstance(alpha, str):
        from retain.alphas import REQUIRED, parse_alpha

        a = parse_alpha(alpha, extrapolate=True)
        return "/".join(f"{m[0]}{a.for_modality(m):g}" for m in REQUIRED)
    return f"{alpha:.2f}"


def _save(out: Path, results: list[dict], args: dict, timings: dict) -> None:
    """Every count so far, rewritten after each alpha so an interrupted run keeps its numbers."""
    _write_json(out / "testbed.json", {"args": args, "results": results, "timings_s": {k: round(v, 1) for k, v in timings.items()}})


def _write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a kill mid-write must not truncate the only record of a run's counts."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def report(out: Path, results: list[dict], args: dict, timings: dict) -> int:
    """Table, verdict and plot over the (seed, skill) pairs in `results` that finished every alpha."""
    all_results = results
    alphas = list(args["alphas"])
    complete = {(r["seed"], r["skill"]) for r in results
                if {x["alpha"] for x in results if (x["seed"], x["skill"]) == (r["seed"], r["skill"])} >= set(alphas)}
    results = [r for r in results if (r["seed"], r["skill"]) in complete]  # a seed counts once all its alphas ran
    if not results:
        print("no (seed, skill) has finished every alpha yet")
        return 1
    skills = [k for k in args["skills"] if any(r["skill"] == k for r in results)]
    settings = [k for k in results[0] if k == "id" or k.startswith("ood:")]
    families = pooled_families(settings)
    summary = summarise(results, skills, alphas, settings)
    verdict = check(summary, skills, alphas, families)
    for skill in skills:
        verdict[skill]["paired_ood"] = paired(results, skill, verdict[skill]["best_mid_alpha"], alphas, families)
    seeds = {k: sorted({r["seed"] for r in results if r["skill"] == k}) for k in skills}
    data = {"args": args, "results": all_results, "seeds": seeds, "summary": summary, "verdict": verdict,
            "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    _write_json(out / "testbed.json", data)
    print(table(summary, skills, alphas, settings))
    print(json.dumps({"seeds": seeds, "verdict": verdict, "timings_s": data["timings_s"]}, indent=2))
    print(f"wrote {out / 'testbed.json'}")
    plot(out / "testbed.png", results, skills, alphas, settings)
    return 0


def pooled_families(settings) -> list[str]:
    """The families the pooled OOD figure means: an opt-in family (ood:paraphrase) is its own column."""
    from retain.sim import get_setting

    return [s for s in settings if s.startswith("ood:") and not get_setting(s).opt_in]


def plot(path: Path, results: list[dict], skills, alphas, settings) -> None:
    """Success against alpha per skill, counts pooled over seeds, with 95% bands (the [plot] extra)."""
    from registry.errors import RegistryError
    from registry.plots import POOLED, plot_alpha_sweep
    uniform = all(isinstance(a, (int, float)) for a in alphas)
    xs = [float(a) for a in alphas] if uniform else [i / max(1, len(alphas) - 1) for i in range(len(alphas))]
    families = pooled_families(settings)
    panels = []
    for skill in skills:
        def counts(keys):
            rows = [[r for r in results if r["skill"] == skill and r["alpha"] == a] for a in alphas]
            return [(sum(r[k][0] for r in rs for k in keys), sum(r[k][1] for r in rs for k in keys)) for rs in rows]

        series = {s: counts([s]) for s in settings}
        series[POOLED] = counts(families)
        series[GENERALIST] = counts([GENERALIST])
        seeds = sorted({r["seed"] for r in results if r["skill"] == skill})
        panels.append({"title": f"{skill}: success vs alpha ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})", "xs": xs,
                       "xticklabels": None if uniform else [_label(a) for a in alphas],
                       "xlabel": "alpha (0: base, 1: plain finetune)" if uniform else "merge (table order)", "series": series})
    try:
        plot_alpha_sweep(panels, path, columns=2)
    except RegistryError as e:  # matplotlib missing: the table and JSON above are the record
        print(f"no plot: {e}")
        return
    print(f"wrote {path}")


def summarise(results: list[dict], skills, alphas, settings) -> dict:
    """skill -> alpha -> setting -> mean success over seeds (pooled counts), plus 'ood' (mean of families)."""
    out: dict = {}
    for skill in skills:
        out[skill] = {}
        for a in alphas:
            rows = [r for r in results if r["skill"] == skill and r["alpha"] == a]
            cell = {}
            for s in [*settings, GENERALIST]:
                k = sum(r[s][0] for r in rows)
                n = sum(r[s][1] for r in rows)
                cell[s] = k / n if n else float("nan")
            fams = pooled_families(settings)
            cell["ood"] = float(np.mean([cell[s] for s in fams])) if fams else float("nan")
            cell["per_seed_ood"] = [float(np.mean([r[s][0] / r[s][1] for s in fams])) for r in rows] if fams else []
            out[skill][str(a)] = cell
    return out


def check(summary: dict, skills, alphas, families) -> dict:
    """The issue's criteria, skill by skill, on the seed-pooled means."""
    verdict = {}
    for skill in skills:
        s = summary[skill]
        base, ft = s[str(alphas[0])], s[str(alphas[-1])]
        mids = list(alphas[1:-1])
        best = max(mids, key=lambda a: s[str(a)]["ood"]) if mids else None
        b = s[str(best)] if best is not None else None
        verdict[skill] = {
            "base_near_zero": base["id"] <= NEAR_ZERO,
            "ft_id_at_least_0.7": ft["id"] >= FT_ID_MIN,
            "ft_ood_gap_at_least_0.25": ft["id"] - ft["ood"] >= GAP_MIN,
            "ft_generalist_drops": base[GENERALIST] - ft[GENERALIST] >= GEN_DROP_MIN,
            "best_mid_alpha": best,
            "inverted_u_on_ood": b is not None and b["ood"] > base["ood"] and b["ood"] > ft["ood"],
            "inverted_u_every_seed": b is not None and all(
                m > max(x, y) for m, x, y in zip(b["per_seed_ood"], base["per_seed_ood"], ft["per_seed_ood"])),
            "merge_keeps_generalist": b is not None and b[GENERALIST] >= GEN_KEEP * base[GENERALIST],
        }
    return verdict


def paired(results: list[dict], skill: str, mid: float | None, alphas, families) -> dict:
    """McNemar on paired OOD episodes (all families and seeds pooled): the best middle alpha vs
    each endpoint. b = episodes only the middle alpha solves, c = only the endpoint solves."""
    out = {}
    if mid is None:
        return out
    for end in (alphas[0], alphas[-1]):
        b = c = 0
        for seed in sorted({r["seed"] for r in results if r["skill"] == skill}):
            row = {r["alpha"]: r for r in results if r["skill"] == skill and r["seed"] == seed}
            for fam in families:
                m, e = row[mid]["outcomes"][fam], row[end]["outcomes"][fam]
                b += sum(x == "1" and y == "0" for x, y in zip(m, e))
                c += sum(x == "0" and y == "1" for x, y in zip(m, e))
        z = (b - c) / (b + c) ** 0.5 if b + c else 0.0
        out[f"vs_alpha_{end:g}"] = {"mid_only": b, "end_only": c, "z": round(z, 2)}
    return out


def table(summary: dict, skills, alphas, settings) -> str:
    cols = [*settings, "ood", GENERALIST]
    width = max(6, *(len(_label(a)) for a in alphas))
    head = f"{'skill':<11}{'alpha':>{width}}  " + "".join(f"{c.replace('ood:', ''):>11}" for c in cols)
    lines = [head, "-" * len(head)]
    for skill in skills:
        for a in alphas:
            cell = summary[skill][str(a)]
            lines.append(f"{skill:<11}{_label(a):>{width}}  " + "".join(f"{cell[c]:>11.3f}" for c in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cleanly(main))
