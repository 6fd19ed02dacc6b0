"""RETAIN's gain along base strength: the fixed protocol of docs/testbed.md ("The ladder") on
several bases, one table and one plot of the gain against each base's generalist success.

    # every cell of the protocol (resumable: a cell whose testbed.json holds every alpha is skipped)
    nice python -m benchmarks.ladder run --base clutter=shipped:clutter --base r4k=/work/runs/r4k \\
        --base gpu=/work/runs/minilm-gpu --out /work/runs/ladder
    python -m benchmarks.ladder report --out /work/runs/ladder       # ladder.json, ladder.md, ladder.png

A base is NAME=shipped (the default shipped base), NAME=shipped:EARLIER (one kept by name) or
NAME=DIR, DIR holding weights/ and policy_config.json (what
`device_pretrain.py complete` writes). One cell is one (base, finetune mode, skill, seed): a
`testbed_probes.py` process (it knows the shipped skills and the probes) with the protocol's
alphas and families; the base's strength is `base_skills.py`'s generalist success (220 episodes,
seed 7, as the shipped base's recorded figure). Every metric is the one fixed in docs/testbed.md
before any result was seen: gain = the best middle alpha's pooled OOD (the six default families)
minus the finetune's, with the paired z over every paired OOD episode.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.base_args import shipped_name


SKILLS = ["plates", "whiteboard", "box-back", "place-crate-5"]
FAMILIES = ["ood:position", "ood:object", "ood:background", "ood:distractor", "ood:viewpoint", "ood:language", "ood:paraphrase"]
ALPHAS = ["0", "0.25", "0.5", "0.75", "vision=1,language=0.25,action=1", "vision=1,language=0.5,action=1",
          "vision=1,language=0.75,action=1", "1"]
MODES = {"task": 0.0, "co": 0.2}  # task-FT, and co-FT with a fifth of each batch from pretraining data
ROOT = Path(__file__).resolve().parents[1]  # the benchmarks run as `python -m benchmarks.NAME` from here


def _bases(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, eq, where = spec.partition("=")
        if not eq or not name or not where:
            raise SystemExit(f"Error: --base {spec!r} must be NAME=shipped, NAME=shipped:EARLIER or NAME=DIR")
        if not shipped_name(where) and not (Path(where) / "weights").is_dir():
            raise SystemExit(f"Error: --base {spec}: {where}/weights does not exist; give a folder with weights/ and policy_config.json")
        out[name] = where
    return out


def _base_args(where: str) -> list[str]:
    return ["--base", where] if shipped_name(where) else ["--base", f"{where}/weights", "--base-config", f"{where}/policy_config.json"]


def _complete(path: Path, alphas: list[str]) -> bool:
    try:
        data = json.loads((path / "testbed.json").read_text())
    except (OSError, ValueError):
        return False
    return len({json.dumps(r["alpha"]) for r in data["results"]}) >= len(alphas)


def cmd_run(args) -> int:
    bases = _bases(args.base)
    out = Path(args.out)
    cells = [(b, m, k, s) for b in bases for m in args.modes for k in args.skills for s in args.seeds]
    for name, where in bases.items():
        strength = out / name / "strength.json"
        if not strength.exists():
            strength.parent.mkdir(parents=True, exist_ok=True)
            res = subprocess.run([sys.executable, "-m", "benchmarks.base_skills", *_base_args(where), "--skills", "put-in-box",
                                  "--splits", "generalist", "--episodes", str(args.strength_episodes), "--seed", "7",
                                  "--threads", str(args.threads)], capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                print(res.stderr, file=sys.stderr)
                return res.returncode
            strength.write_text(res.stdout.strip().splitlines()[-1] + "\n")
    for i, (name, mode, skill, seed) in enumerate(cells):
        cell = out / name / mode / skill / f"seed{seed}"
        if _complete(cell, args.alphas):
            continue
        cmd = [sys.executable, "-m", "benchmarks.testbed_probes", *_base_args(bases[name]), "--skills", skill, "--seeds", str(seed),
               "--episodes", str(args.episodes), "--gen-episodes", str(args.gen_episodes), "--mix", str(MODES[mode]),
               "--demos", str(args.demos), "--steps", str(args.steps),
               "--threads", str(args.threads), "--families", *args.families, "--alphas", *args.alphas, "--out", str(cell)]
        print(f"[{i + 1}/{len(cells)}] {' '.join(cmd)}", flush=True)
        res = subprocess.run(cmd, stdout=subprocess.DEVNULL, cwd=ROOT)
        if res.returncode:
            print(f"Error: the cell {name}/{mode}/{skill}/seed{seed} failed (exit {res.returncode}); rerun to resume", file=sys.stderr)
            return res.returncode
    return cmd_report(args)


def _modality(alpha) -> str:
    """Which alpha the best merge moved: one alpha for every modality, the language one alone, or several."""
    if not isinstance(alpha, str):
        return "all (one alpha)"
    parts = dict(p.split("=") for p in alpha.split(","))
    return "language" if float(parts.get("vision", 1)) == float(parts.get("action", 1)) == 1 else "per-modality"


def _finished(saved: dict) -> bool:
    """Whether a cell's testbed.json scores every alpha its run was asked for (it is rewritten
    after each one, so a running or stopped cell holds only the first few)."""
    asked = saved.get("args", {}).get("alphas")
    done = {json.dumps(r["alpha"]) for r in saved["results"]}
    return asked is None or len(done) >= len(asked)


def summarise_cell_group(dirs: list[Path]) -> dict | None:
    """The seeds of one (base, mode, skill) pooled as testbed.py pools them, reduced to the ladder's row."""
    from benchmarks import testbed

    from retain.evaluate import GENERALIST

    results = []
    for d in dirs:
        try:
            saved = json.loads((d / "testbed.json").read_text())
        except (OSError, ValueError):
            continue
        if not _finished(saved):
            print(f"left out {d}: a cell still running or stopped (not every alpha scored)", file=sys.stderr)
            continue
        results += saved["results"]
    if not results:
        return None
    alphas = []
    for r in results:
        if r["alpha"] not in alphas:
            alphas.append(r["alpha"])
    alphas.sort(key=lambda a: (a == 1, a != 0))  # base first, finetune last, merges in between as run
    skill = results[0]["skill"]
    settings = [k for k in results[0] if k == "id" or k.startswith("ood:")]
    summary = testbed.summarise(results, [skill], alphas, settings)[skill]
    families = testbed.pooled_families(settings)
    mids = alphas[1:-1]
    best = max(mids, key=lambda a: summary[str(a)]["ood"])
    z = testbed.paired(results, skill, best, alphas, families)
    base, ft, merge = summary[str(alphas[0])], summary[str(alphas[-1])], summary[str(best)]
    para = "ood:paraphrase" in settings
    seeds = sorted({r["seed"] for r in results})
    # pooled rows hide a seed whose finetune failed (and whose merges then "gain"): show each seed's
    by_seed = {s: testbed.summarise([r for r in results if r["seed"] == s], [skill], alphas, settings)[skill][str(alphas[-1])]["id"]
               for s in seeds}
    return {
        "seeds": seeds,
        "finetune_id": ft["id"], "finetune_id_by_seed": by_seed, "finetune_ood": ft["ood"], "best_merge": testbed._label(best), "modality": _modality(best),
        "merge_id": merge["id"], "merge_ood": merge["ood"], "gain": merge["ood"] - ft["ood"],
        "z_vs_finetune": z.get(f"vs_alpha_{alphas[-1]:g}", {}).get("z"),
        "kept": merge[GENERALIST] / base[GENERALIST] if base[GENERALIST] else None,  # a base at 0% has nothing to keep
        "base_generalist": base[GENERALIST], "finetune_generalist": ft[GENERALIST],
        "paraphrase_finetune": ft["ood:paraphrase"] if para else None, "paraphrase_merge": merge["ood:paraphrase"] if para else None,
    }


def cmd_report(args) -> int:
    from registry.errors import RegistryError

    out = Path(args.out)
    rows = []
    for base_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        try:
            strength = json.loads((base_dir / "strength.json").read_text())["put-in-box"]["generalist"] / 100
        except (OSError, ValueError, KeyError):
            continue
        for mode_dir in sorted(p for p in base_dir.iterdir() if p.is_dir()):
            for skill_dir in sorted(p for p in mode_dir.iterdir() if p.is_dir()):
                row = summarise_cell_group(sorted(skill_dir.glob("seed*")))
                if row:
                    rows.append({"base": base_dir.name, "strength": strength, "language_backbone": _language_backbone(base_dir),
                                 "mode": mode_dir.name, "skill": skill_dir.name, **row})
    if not rows:
        print(f"no finished cell under {out}")
        return 1
    rows.sort(key=lambda r: (r["strength"], r["mode"], r["skill"]))
    head = ("| base | generalist | FT | skill | seeds | FT ID | FT OOD | best merge | merge OOD | gain | z | kept "
            "| paraphrase FT / merge |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head] + [
        f"| {r['base']} | {100 * r['strength']:.1f} | {r['mode']} | {r['skill']} | {','.join(map(str, r['seeds']))} "
        f"| {_ft_id(r)} | {100 * r['finetune_ood']:.1f} | {r['best_merge']} | {100 * r['merge_ood']:.1f} "
        f"| {100 * r['gain']:+.1f} | {r['z_vs_finetune']} | {_percent(r['kept'])} | "
        + (f"{100 * r['paraphrase_finetune']:.1f} / {100 * r['paraphrase_merge']:.1f} |" if r["paraphrase_finetune"] is not None else "- |")
        for r in rows]
    (out / "ladder.md").write_text("\n".join(lines) + "\n")
    (out / "ladder.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    try:
        plot_gain(rows, out / "ladder.png")
    except RegistryError as e:  # matplotlib missing: the table and JSON are the record
        print(f"no plot: {e}")
    print(f"wrote {out / 'ladder.md'}, {out / 'ladder.json'} and {out / 'ladder.png'}")
    return 0


def _language_backbone(base_dir: Path) -> str:
    """"minilm" for a rung whose recorded recipe reads instructions with the pretrained encoder;
    "hashed" otherwise (the shipped rungs record no recipe and use hashed words)."""
    try:
        config = json.loads((base_dir / "recipe.json").read_text())["recipe"]["policy_config"]
    except (OSError, ValueError, KeyError):
        return "hashed"
    return config.get("language_backbone", "hashed")


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _ft_id(row: dict) -> str:
    """The pooled finetune ID, with each seed's in brackets when there are several."""
    pooled = f"{100 * row['finetune_id']:.1f}"
    per = row["finetune_id_by_seed"]
    return pooled if len(per) < 2 else f"{pooled} ({' / '.join(f'{100 * v:.0f}' for v in per.values())})"


def plot_gain(rows: list[dict], path: Path) -> Path:
    """The gain of the best merge over the finetune (points) against the base's generalist success,
    one line per skill through the rungs with hashed words, one panel per finetune mode. A rung with
    a pretrained language backbone is a different kind of base, so its points stand apart as stars."""
    from registry.plots import pyplot

    plt = pyplot()
    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for skill in sorted({r["skill"] for r in rows if r["mode"] == mode}):
            mine = sorted((r for r in rows if r["mode"] == mode and r["skill"] == skill), key=lambda r: r["strength"])
            hashed = [r for r in mine if r.get("language_backbone", "hashed") == "hashed"]
            line, = ax.plot([100 * r["strength"] for r in hashed], [100 * r["gain"] for r in hashed], marker="o", linewidth=2, label=skill)
            apart = [r for r in mine if r not in hashed]
            if apart:
                ax.plot([100 * r["strength"] for r in apart], [100 * r["gain"] for r in apart], linestyle="none", marker="*",
                        markersize=12, color=line.get_color(), label=f"{skill}, {apart[0]['language_backbone']} words")
            for r in mine:  # a gain is read with its paired z, never alone
                ax.annotate(f"{r['base']}, z {r['z_vs_finetune']:+.1f}", (100 * r["strength"], 100 * r["gain"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=line.get_color())
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_title(f"{mode}-FT: best merge's OOD minus the finetune's")
        ax.set_xlabel("base generalist success (%)")
        ax.set_ylabel("gain (points)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every missing cell of the protocol, then report")
    r.add_argument("--base", action="append", required=True, help="NAME=shipped, NAME=shipped:EARLIER or NAME=DIR (repeat; at least three for a ladder)")
    r.add_argument("--skills", nargs="+", default=SKILLS)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["task", "co"])
    r.add_argument("--episodes", type=int, default=200, help="paired episodes per family (the protocol: 200)")
    r.add_argument("--gen-episodes", type=int, default=200)
    r.add_argument("--strength-episodes", type=int, default=220)
    r.add_argument("--families", nargs="+", default=FAMILIES)
    r.add_argument("--alphas", nargs="+", default=ALPHAS)
    r.add_argument("--demos", type=int, default=50, help="ID demos (the protocol: 50)")
    r.add_argument("--steps", type=int, default=300, help="finetune steps (the protocol: learn's 300)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report", help="the table and plot of finished cells")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
