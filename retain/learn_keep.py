"""The learn step's choice of alpha with the lineage in view (the rule itself: retain.keep).

After the strategy has scored every candidate on the new skill's validation family, each candidate
that learns the skill is checked, best validation first, on what the lineage already had: every
earlier skill on the split its stored demos were recorded in (the built-in demos: "id") and the
generalist suite, with `keep_episodes` paired episodes; the parent (alpha 0) is checked on the same
episodes, so a candidate's delta is its own and not the sample's. Checking stops as soon as no
unchecked candidate could beat one that meets every constraint. The table of the chosen
candidate (and the parent's recorded figures beside it) is printed before anything is committed
and returned for the recipe.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from registry.records import Version
from retain.alphas import Alpha
from retain.evaluate import sim_skills
from retain.keep import Candidate, Check, KeepSpec, choose, format_table, order_to_check, parse_keep, refusal, table, verdicts
from retain.learn_scoring import GENERALIST, Scorer, SkillScore, SkillSplit
from retain.select import Selection

BUILTIN_SOURCE = "builtin-expert:"


def demo_setting(source: Optional[str]) -> str:
    """The simulator setting a stored demo set was recorded in: named by built-in demos'
    source (builtin-expert:TASK:SETTING:...), else the ID split (a user's demos are their ID)."""
    if source and source.startswith(BUILTIN_SOURCE):
        parts = source.split(":")
        if len(parts) > 2 and parts[2]:
            return parts[2]
    return "id"


def earlier_skills(registry, parent: Version, skill: str) -> list[str]:
    """Skills learned along `parent`'s history (root first, each once), the new one excepted."""
    from registry.continual import history_along

    steps = history_along(registry.lineage(), head=parent.name)
    return [s for s in dict.fromkeys(st.skill for st in steps if st.skill) if s != skill]


def lineage_checks(registry, parent: Version, skill: str, keep: Sequence[str]) -> tuple[KeepSpec, list[Check]]:
    """Parse and resolve `--keep` against the parent's lineage; bad input fails here, before any work."""
    spec = parse_keep(keep)
    checkable = sim_skills() if (parent.config or {}).get("policy") else []
    return spec, spec.resolve(earlier_skills(registry, parent, skill), checkable, new=skill)


def _check_jobs(registry, parent: Version, checks: Sequence[Check]) -> dict[str, SkillSplit]:
    """label -> the (skill, split) job measuring it: the skill on its stored demos' setting, or the suite."""
    from registry.continual import history_along

    runs = {r.result: r for r in registry.learn_runs()}
    setting: dict[str, str] = {}
    for step in history_along(registry.lineage(), head=parent.name):
        run = runs.get(step.version)
        if run is not None and run.demo_set_id is not None:
            setting[run.skill] = demo_setting(registry.demo_set(run.demo_set_id).source)  # the latest learning counts
    # the new skill: its ID split (the built-in demos' setting; a user's demos are their ID)
    return {c.label: ((c.skill, "id" if c.new else setting.get(c.skill, "id")) if c.skill else (None, GENERALIST)) for c in checks}


def _kept(rows: Sequence[SkillScore], jobs: dict[str, SkillSplit]) -> dict[str, float]:
    by_job = {(r.skill, r.split): r.rate for r in rows}
    return {label: by_job[job] for label, job in jobs.items()}


def _moved(alpha: Alpha) -> float:
    return alpha.vision + alpha.language + alpha.action


def select_in_view(registry, parent: Version, parent_dir: Path, ft_dir: Path, skill: str, spec: KeepSpec, checks: Sequence[Check],
                   episodes: int, force: bool, scorer: Scorer, selection: Selection, val_rows: dict[str, SkillScore],
                   candidate: Callable[[Alpha], Path], say: Callable[[str], None]) -> tuple[Alpha, dict[str, Any]]:
    """(the chosen alpha, the record for the recipe); raises exit 5 (`keep.refusal`) when
    the user's constraints hold for no candidate, after printing the best trade-off's table."""
    jobs = _check_jobs(registry, parent, checks)
    job_list = list(dict.fromkeys(jobs.values()))
    parent_val = scorer.validation(parent_dir, skill)
    new_jobs = {c.label: jobs[c.label] for c in checks if c.new}
    parent_rows, ft_rows = scorer.evaluate_many([(parent_dir, job_list), (ft_dir, list(new_jobs.values()))], bar=False,
                                                episodes=episodes)
    parent_c = Candidate("0", Alpha.uniform(0.0), parent_val.rate, _kept(parent_rows, jobs), 0.0)
    finetuned = Candidate("1", Alpha.uniform(1.0), 0.0, _kept(ft_rows, new_jobs), 3.0)
    cands = {p["alpha"].key: Candidate(p["alpha"].key, p["alpha"], val_rows[p["alpha"].key].rate, {}, _moved(p["alpha"]))
             for p in selection.sweep}
    order = order_to_check(list(cands.values()), parent_c)
    batch = max(1, scorer.pool.workers if scorer.pool is not None else 1)
    say(f"checking what the candidates keep of {', '.join(c.label for c in checks)} ({episodes} episodes each, "
        f"{len(order)} of {len(cands)} candidates learn {skill}: best validation first)")
    best_met: Optional[float] = None
    i = 0
    while i < len(order) and (best_met is None or order[i].validation >= best_met):
        part = order[i:i + batch]
        results = scorer.evaluate_many([(candidate(c.alpha), job_list) for c in part], bar=False, episodes=episodes)
        for c, rows in zip(part, results):
            cands[c.key] = Candidate(c.key, c.alpha, c.validation, _kept(rows, jobs), c.moved)
            if all(v.ok for v in verdicts(checks, parent_c, cands[c.key], finetuned)):
                best_met = max(best_met or 0.0, c.validation)
        i += len(part)
    choice = choose(list(cands.values()), parent_c, checks, spec, force=force, finetuned=finetuned)
    if not choice.chosen.kept:  # nothing learns the skill: the fallback was never checked; its table still counts
        c = choice.chosen
        rows = scorer.evaluate_many([(candidate(c.alpha), job_list)], bar=False, episodes=episodes)[0]
        cands[c.key] = Candidate(c.key, c.alpha, c.validation, _kept(rows, jobs), c.moved)
        choice = choose(list(cands.values()), parent_c, checks, spec, force=force, finetuned=finetuned)
    by_job = {job: label for label, job in jobs.items()}
    recorded = {by_job[(s.skill, s.split)]: s.rate for s in registry.scores(parent.name) if (s.skill, s.split) in by_job}
    rows = table(checks, parent_c, choice.chosen, recorded, finetuned)
    print(format_table(rows, choice.chosen.key, choice.chosen.validation), file=sys.stderr, flush=True)
    print(choice.reason, file=sys.stderr, flush=True)
    record = {
        "keep": spec.text, "keep_default": spec.soft, "force": force, "episodes": episodes, "seed": scorer.seed,
        "met": choice.met, "reason": choice.reason, "alpha": choice.chosen.alpha.to_json(),
        "parent": {"validation": parent_c.validation, "kept": parent_c.kept}, "finetuned": {"kept": finetuned.kept},
        "table": rows,
        "candidates": [{"alpha": 0.0, "role": "parent", "validation": parent_c.validation, "kept": parent_c.kept}]
                      + [{"alpha": c.alpha.to_json(), "validation": c.validation, "kept": c.kept or None} for c in cands.values()],
    }
    if choice.stop:
        raise refusal(choice)
    return choice.chosen.alpha, record
