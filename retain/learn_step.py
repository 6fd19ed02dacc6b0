"""One learn step, shared by `learn` and `replay`: run it in a work folder, then commit it.

    run_step:    finetune (or take outside weights) -> choose alpha on ONE OOD family -> merge
                 -> score the merge, the plain finetune and the parent        (nothing committed)
    commit_step: ONE version with its learn run (delta, alpha, sweep, recipe, timings, scores),
                 the ref moved by compare-and-swap; the parent's new scores after it

The step also gathers what a finetune mixes in: rehearsal frames (the stored demos of skills
learned earlier along the parent's history) and co-ft's pretraining frames (regenerated from the
base's recorded data recipe). `learn` and `replay` differ only in where the options, demos and
alpha come from; everything that makes or records a version lives here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from registry.checkpoint import checkpoint_bytes
from registry.errors import invalid
from registry.records import GENERALIST, NewLearnRun, Version
from retain.alphas import Alpha
from retain.evaluate import ood_settings, sim_skills
from retain.policies import policy_of
from retain.learn_demos import expected_shapes
from retain.learn_options import LearnOptions
from retain.learn_scoring import Scorer, SkillScore, SkillSplit, evaluation_jobs, stored_rows
from retain.progress import progress_bar
from retain.select import Selection, get_strategy, tie_warning

Say = Callable[[str], None]

@dataclasses.dataclass
class StepOutcome:
    """What running one skill's step produced (in the work folder) before anything is committed."""

    finetuned: Path
    merged: Path
    alpha: Alpha
    selection: Optional[Selection]
    sweep: list[dict[str, Any]]
    scores: list[SkillScore]
    finetuned_scores: list[SkillScore]
    timings: dict[str, float]
    parent_scores: list[SkillScore] = dataclasses.field(default_factory=list)  # the parent on the new skill + generalist
    parent_new_scores: list[SkillScore] = dataclasses.field(default_factory=list)  # those the parent had not recorded yet
    rehearsed: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the earlier demo sets the finetune mixed in
    trainer: Any = None  # retain.trainer_cmd.TrainerRun when the user's --finetune-cmd finetuned
    parent_dir: Optional[Path] = None  # the parent's weights the step merged onto
    preset: Optional[str] = None  # the partition preset the merge used
    kept: Optional[dict[str, Any]] = None  # the lineage check (retain.learn_keep): constraints, table, candidates


# ---------------------------------------------------------------------------------------- helpers


def say_on_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def say_nothing(msg: str) -> None:
    pass


class StageTimer:
    """Accumulates wall-clock seconds per named stage: `with timer("finetune"): ...`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


def lineage_skills(registry, version: str) -> list[str]:
    """Skills learned along `version`'s ancestry, root first, each once."""
    from registry.continual import history_along

    steps = history_along(registry.lineage(), head=version)
    return list(dict.fromkeys(s.skill for s in steps if s.skill))


def pretraining_recipe(registry, version: Version) -> Optional[dict]:
    """The recipe of the pretrained base at the root of `version`'s lineage, if it records its data."""
    v = version
    while v.parent is not None:
        v = registry.resolve(v.parent)
    recipe = v.recipe or {}
    return recipe if {"setting", "episodes", "seed"} <= set(recipe) else None


def rehearsal_sets(registry, parent: Version, skill: str) -> list[dict[str, Any]]:
    """The stored demo sets of the skills learned along `parent`'s ancestry (root first, each set
    once), other than `skill`'s own: what --rehearse mixes in."""
    from registry.continual import history_along

    runs = {r.result: r for r in registry.learn_runs()}  # one query, not one per version
    out: list[dict[str, Any]] = []
    for step in history_along(registry.lineage(), head=parent.name):
        run = runs.get(step.version)
        if run is None or run.demo_set_id is None or run.skill == skill or any(r["demo_set"] == run.demo_set_id for r in out):
            continue
        out.append({"skill": run.skill, "demo_set": run.demo_set_id, "folder": registry.demo_set(run.demo_set_id).folder})
    return out


def stored_demo_frames(registry, demo_set_id: int, dest: Path, parent: Version):
    """A stored demo set's frames, refused with one line if they do not fit `parent`'s policy."""
    from retain.data.lerobot import read_dataset
    from retain.frames import frames_from

    expect = expected_shapes(*policy_of(parent.config)) if (parent.config or {}).get("policy") else {}
    return frames_from(read_dataset(registry.fetch_demo_set(demo_set_id, dest), **expect))


def rehearsal_frames(registry, parent: Version, sets: list[dict[str, Any]], work: Path):
    """The frames of `sets` as one DemoFrames."""
    from retain.frames import concat_frames

    if not sets:
        raise invalid(f"--rehearse mixes in the demos of skills learned before, but no skill with stored demos was learned "
                      f"along {parent.name}'s history; drop --rehearse")
    return concat_frames([stored_demo_frames(registry, r["demo_set"], work / f"rehearse-{i}", parent) for i, r in enumerate(sets)])


def pretraining_frames(base_recipe: Optional[dict], episodes: int):
    """Pretraining frames for co-ft, regenerated from the base's recorded data recipe."""
    from retain import sim
    from retain.pretrain import collect_frames

    if base_recipe is None:
        raise invalid("co-ft needs the base's pretraining data, but this lineage's base records no data recipe; use --mode task-ft")
    return collect_frames(list(sim.PRETRAIN_TASKS), base_recipe["setting"], episodes, int(base_recipe["seed"]),
                          float(base_recipe.get("noise", 0.0)), (base_recipe.get("policy_config") or {}).get("image_size"))


# ---------------------------------------------------------------------------------------- pieces


def check_same_layout(parent: Path, finetuned: Path, parent_name: str) -> None:
    """--finetuned weights must have exactly the parent's tensor names, shapes and dtypes."""
    from registry.checkpoint import open_checkpoint

    with open_checkpoint(parent) as p, open_checkpoint(finetuned) as f:
        missing = sorted(set(p.specs) - set(f.specs))
        extra = sorted(set(f.specs) - set(p.specs))
        differ = [n for n in sorted(set(p.specs) & set(f.specs))
                  if (p.specs[n].shape, p.specs[n].dtype) != (f.specs[n].shape, f.specs[n].dtype)]
    if missing or extra or differ:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}" + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else ""))
        if differ:
            n = differ[0]
            parts.append(f"{len(differ)} with other shape/dtype, e.g. {n} {list(f.specs[n].shape)} {f.specs[n].dtype} "
                         f"vs {list(p.specs[n].shape)} {p.specs[n].dtype}")
        raise invalid(f"--finetuned {finetuned} does not match the parent {parent_name}: {'; '.join(parts)}; "
                      f"finetune from {parent_name}'s weights (retain export {parent_name})")


def merge_to(parent: Path, finetuned: Path, alpha: Alpha, partition, dest: Path) -> Path:
    from retain.merge import merge_checkpoints

    merge_checkpoints(parent, [finetuned], [alpha], partition, dest, progress=False)
    return dest


def choose_alpha(
    parent: Path, finetuned: Path, partition, skill: str, opts: LearnOptions, scorer: Scorer, work: Path,
    progress: bool, say: Say, in_view: Optional[Callable] = None,
) -> tuple[Alpha, Optional[Selection], dict[str, Path], dict[str, SkillScore], Optional[dict[str, Any]]]:
    """(alpha, selection, candidate folders by alpha key, validation rows by alpha key, the lineage
    check's record). `in_view(selection, rows, candidate)` picks among the scored candidates with
    the lineage in view (retain.learn_keep); without it the strategy's pick stands."""
    cands: dict[str, Path] = {}
    rows: dict[str, SkillScore] = {}

    def candidate(alpha: Alpha) -> Path:
        key = alpha.key
        if key not in cands:
            cands[key] = merge_to(parent, finetuned, alpha, partition, work / f"cand-{len(cands)}")
        return cands[key]

    if not opts.auto:
        candidate(opts.alpha)
        return opts.alpha, None, cands, rows, None
    strategy = get_strategy(opts.strategy)
    can_score = bool(opts.eval_cmd) or (scorer.sim and skill in sim_skills())
    if not can_score:
        raise invalid(f"cannot choose alpha for {skill!r}: it is not a simulator skill; pass --eval-cmd 'CMD {{checkpoint}}' or a fixed --alpha")
    say(f"choosing alpha ({opts.strategy} over {', '.join(f'{g:g}' for g in opts.alpha_grid)}) on {opts.val_family}")
    bar = progress_bar(None, "alpha sweep", unit="alphas", show=progress)

    # The first round does not depend on any score: evaluate it side by side before the strategy asks.
    first = strategy.first_round(opts.alpha_grid)
    early = dict(zip((a.key for a in first), scorer.validations([candidate(a) for a in first], skill)))

    def score(alpha: Alpha) -> float:
        key = alpha.key
        row = early.pop(key) if key in early else scorer.validation(candidate(alpha), skill)
        rows[key] = row
        if bar is not None:
            bar.update(1)
            bar.set_postfix(alpha=key, rate=f"{row.rate:.2f}")
        return row.rate

    try:
        sel = strategy.choose(score, grid=opts.alpha_grid)
    finally:
        if bar is not None:
            bar.close()
    warning = tie_warning(sel, opts.val_family)
    if warning:
        say_on_stderr(warning)  # even under --quiet: it says the recorded alpha rests on no evidence
    if in_view is not None:
        alpha, record = in_view(sel, rows, candidate)
        return alpha, sel, cands, rows, record
    return sel.alpha, sel, cands, rows, None


def sweep_record(selection: Optional[Selection], rows: dict[str, SkillScore], family: str) -> list[dict[str, Any]]:
    if selection is None:
        return []
    return [{"alpha": p["alpha"].to_json(), "role": "candidate", "scores": {family: rows[p["alpha"].key].brief()}}
            for p in selection.sweep]


# ---------------------------------------------------------------------------------------- the step


def run_step(
    registry, parent: Version, skill: str, frames: Any, opts: LearnOptions, work: Path, *,
    finetuned_source: Optional[Path] = None, alpha_override: Optional[Alpha] = None, score: bool = True,
    progress: bool = False, say: Say = say_nothing, parent_dir: Optional[Path] = None, demos_ref: Optional[str] = None,
) -> StepOutcome:
    """Finetune (or take `finetuned_source`), choose alpha, merge, evaluate: everything but the commit.

    `alpha_override` skips the search; `score=False` skips the evaluations (replay's
    verification only needs the bytes); `parent_dir` is the parent's weights when the caller has
    already checked them out; `demos_ref` is the dataset's path or URL for --finetune-cmd's {demos}.
    """
    timer = StageTimer()
    bars = progress  # a bar on a terminal, a line every few seconds in a log (retain.progress)
    work.mkdir(parents=True, exist_ok=True)
    with timer("checkout"):
        if parent_dir is None:
            parent_dir = registry.checkout(parent.name, work / "parent")
    with Scorer(parent.config, episodes=opts.episodes, seed=opts.eval_seed, validation_family=opts.val_family,
                eval_cmd=opts.eval_cmd, progress=bars, model_bytes=checkpoint_bytes(parent_dir)) as scorer:
        if score or (alpha_override is None and opts.auto):
            scorer.start()  # the evaluation workers import torch while this process finetunes
        return _run_step(registry, parent, skill, frames, opts, work, scorer, timer, parent_dir, finetuned_source,
                         alpha_override, score, bars, say, demos_ref)


def _run_step(registry, parent: Version, skill: str, frames: Any, opts: LearnOptions, work: Path, scorer: Scorer,
              timer: StageTimer, parent_dir: Path, finetuned_source: Optional[Path], alpha_override: Optional[Alpha], score: bool,
              bars: bool, say: Say, demos_ref: Optional[str] = None) -> StepOutcome:
    from retain.finetune import finetune
    from retain.partitions import get_partition_map

    preset = opts.preset or (scorer.adapter.partition_preset if scorer.adapter else None)
    if preset is None:
        raise invalid(f"{parent.name} records no policy, so its partition is unknown; pass --preset (e.g. openpi-pi0)")
    partition = get_partition_map(preset)
    rehearsed: list[dict[str, Any]] = []
    trainer = None
    if finetuned_source is not None:
        check_same_layout(parent_dir, finetuned_source, parent.name)
        ft_dir = finetuned_source
    elif opts.finetune_cmd is not None:
        with timer("finetune"):
            trainer, ft_dir = run_finetune_cmd(parent, parent_dir, demos_ref, opts, work, say)
    else:
        recipe = opts.finetune
        mix = rehearsal = None
        if recipe.rehearse:
            with timer("rehearsal_data"):
                rehearsed = rehearsal_sets(registry, parent, skill)
                rehearsal = rehearsal_frames(registry, parent, rehearsed, work)
                say(f"rehearsing {', '.join(r['skill'] for r in rehearsed)} ({len(rehearsal)} frames, "
                    f"{recipe.rehearse:g} of each batch)")
        if recipe.mixes:
            with timer("pretrain_data"):
                say(f"regenerating {recipe.pretrain_episodes} episodes of pretraining data for co-ft")
                mix = pretraining_frames(pretraining_recipe(registry, parent), recipe.pretrain_episodes)
        say(f"finetuning {parent.name} on {skill} ({recipe.mode}, {recipe.steps} steps, lr {recipe.lr:g}, seed {recipe.seed}"
            + (f", {recipe.nproc} processes" if recipe.nproc > 1 else "") + ")")
        with timer("finetune"):
            ft = finetune(parent_dir, parent.config, frames, recipe, work / "finetuned", pretrain_frames=mix, progress=bars,
                          rehearsal_frames=rehearsal)
        if ft.warning:
            say(f"warning: {ft.warning}")
        ft_dir = ft.checkpoint
    with timer("select"):
        chosen = opts if alpha_override is None else dataclasses.replace(opts, alpha=alpha_override)
        alpha, selection, cands, val_rows, kept = choose_alpha(parent_dir, ft_dir, partition, skill, chosen, scorer, work, bars, say,
                                                               _in_view(registry, parent, parent_dir, ft_dir, skill, chosen, scorer, say))
    merged = cands.pop(alpha.key)
    for other in cands.values():  # candidates of a multi-GB model add up: keep only the chosen merge
        shutil.rmtree(other, ignore_errors=True)
    scores: list[SkillScore] = []
    ft_scores: list[SkillScore] = []
    sweep = sweep_record(selection, val_rows, opts.val_family)
    parent_rows: list[SkillScore] = []
    parent_new: list[SkillScore] = []
    if score:
        with timer("evaluate"):
            scores, ft_scores, parent_rows, parent_new = _score_step(registry, parent, parent_dir, skill, opts, scorer,
                                                                     merged, ft_dir, alpha, val_rows, say)
        if parent_rows and opts.compare_finetuned:
            sweep.append({"alpha": 0.0, "role": "parent", "scores": {r.split: r.brief() for r in parent_rows}})
        if ft_scores:
            sweep.append({"alpha": 1.0, "role": "finetuned", "scores": {r.split: r.brief() for r in ft_scores}})
    return StepOutcome(ft_dir, merged, alpha, selection, sweep, scores, ft_scores, timer.timings, parent_rows, parent_new,
                       rehearsed, trainer, parent_dir, preset, kept)


def store_finetune(step: StepOutcome, dest: Path):
    """The step's finetune, packed against its extrapolation from the merge (retain.finetune_store),
    at `dest`. Returns the PackReport (its target_hash is the finetune's weight hash)."""
    from retain import finetune_store

    return finetune_store.store_finetune(step.parent_dir, step.merged, step.finetuned, step.alpha, step.preset, dest, dest.parent)


def run_finetune_cmd(parent: Version, parent_dir: Path, demos_ref: Optional[str], opts: LearnOptions, work: Path, say: Say):
    """The user's trainer on the parent's weights (+ config.json): (TrainerRun, its finetuned folder)."""
    import json

    from retain.trainer_cmd import run_trainer

    config = parent_dir / "config.json"
    if not config.exists():  # what `retain export` writes: the policy's config, and where it came from
        config.write_text(json.dumps({**(parent.config or {}), "retain": {"version": parent.name, "weight_hash": parent.weight_hash}},
                                     indent=2, sort_keys=True) + "\n")
    out, log = work / "finetuned-cmd", work / TRAINER_LOG
    say(f"finetuning {parent.name} with --finetune-cmd (seed {opts.finetune.seed}; log {log})")
    run = run_trainer(opts.finetune_cmd, parent=parent_dir, demos=demos_ref, out=out, seed=opts.finetune.seed, log=log,
                      timeout_s=opts.finetune_timeout)
    say(f"--finetune-cmd finished in {run.wall_s:.1f} s")
    check_same_layout(parent_dir, out, parent.name)
    return run, out


TRAINER_LOG = "finetune-cmd.log"


def trainer_record(run, dest_folder: Path) -> dict[str, Any]:
    """What a recipe keeps of a --finetune-cmd run. Its log tail is written into `dest_folder`
    (stored with the finetune's pack, so content-addressed: the recorded sha256 names the blob)."""
    import hashlib

    tail = (run.log_tail + "\n").encode()
    (dest_folder / TRAINER_LOG).write_bytes(tail)
    return {"exit_status": run.exit_status, "wall_s": run.wall_s, "log_tail": f"sha256:{hashlib.sha256(tail).hexdigest()}",
            "log_file": TRAINER_LOG}


def _in_view(registry, parent: Version, parent_dir: Path, ft_dir: Path, skill: str, opts: LearnOptions, scorer: Scorer,
             say: Say) -> Optional[Callable]:
    """The lineage check for an alpha search in the simulator, or None (a fixed alpha, the user's
    evaluator, `--keep none`, or nothing earlier to keep)."""
    from retain.learn_keep import lineage_checks, select_in_view

    if not opts.auto or opts.eval_cmd or not scorer.sim:
        return None
    spec, checks = lineage_checks(registry, parent, skill, opts.keep)
    if not checks:
        return None
    return lambda sel, rows, candidate: select_in_view(registry, parent, parent_dir, ft_dir, skill, spec, checks, opts.keep_episodes,
                                                       opts.force, scorer, sel, rows, candidate, say)


def _parent_jobs(registry, parent: Version, skill: str, opts: LearnOptions) -> tuple[list[SkillSplit], dict[SkillSplit, SkillScore]]:
    """The parent (alpha 0) on the generalist suite and, for the comparison, on the new skill, with
    the scores it already has.

    Generalist retention is measured against the chain's root, so every parent needs that score;
    scores the parent already has are reused, the others evaluated (and recorded after the commit).
    """
    wanted = [(skill, "id")] + [(skill, f) for f in ood_settings()] if opts.compare_finetuned and skill in sim_skills() else []
    wanted.append((None, GENERALIST))
    have = {(r.skill, r.split): r for r in stored_rows(registry, parent.name)}
    return wanted, {j: have[j] for j in wanted if j in have}



def _score_step(registry, parent: Version, parent_dir: Path, skill: str, opts: LearnOptions, scorer: Scorer,
                merged: Path, ft_dir: Path, alpha: Alpha, val_rows: dict[str, SkillScore], say: Say
                ) -> tuple[list[SkillScore], list[SkillScore], list[SkillScore], list[SkillScore]]:
    """Scores of the merged backbone, the plain finetune and the parent (rows, and the parent's new rows)."""
    scores: list[SkillScore] = []
    ft_scores: list[SkillScore] = []
    chosen_val = val_rows.get(alpha.key)
    if opts.eval_cmd:
        if chosen_val is None:
            chosen_val = scorer.validation(merged, skill)
        if chosen_val.episodes:
            scores.append(chosen_val)
        if opts.compare_finetuned:
            ft_row = scorer.validation(ft_dir, skill)
            if ft_row.episodes:
                ft_scores.append(ft_row)
    if not scorer.sim:
        return scores, ft_scores, [], []
    skills = [s for s in lineage_skills(registry, parent.name) if s != skill] + [skill]
    jobs = evaluation_jobs(skills, True, sim_skills())
    if opts.eval_cmd:  # the external evaluator already gave this skill's validation score
        jobs = [j for j in jobs if j != (skill, opts.val_family)]
    say(f"evaluating the merged backbone: {len(jobs)} (skill, split) pairs x {opts.episodes} episodes")
    # The chosen candidate's validation score was measured on the same paired episodes: reuse it.
    reuse = chosen_val if chosen_val is not None and chosen_val.evaluator != "external" else None
    todo = [j for j in jobs if not (reuse and j == (skill, opts.val_family))]
    ft_jobs = [j for j in jobs if j[0] in (skill, None)] if opts.compare_finetuned and skill in sim_skills() else []
    if ft_jobs:
        say(f"evaluating the plain finetune for comparison: {len(ft_jobs)} pairs")
    parent_wanted, parent_have = _parent_jobs(registry, parent, skill, opts)
    parent_todo = [j for j in parent_wanted if j not in parent_have]
    merged_rows, ft_scores_sim, parent_new = scorer.evaluate_many(
        [(merged, todo), (ft_dir, ft_jobs), (parent_dir, parent_todo)], desc="evaluate")
    rows = {(r.skill, r.split): r for r in merged_rows}
    if reuse:
        rows[(skill, opts.val_family)] = reuse
    scores += [rows[j] for j in jobs if j in rows]
    ft_scores += ft_scores_sim
    parent_rows = {**parent_have, **{(r.skill, r.split): r for r in parent_new}}
    return scores, ft_scores, [parent_rows[j] for j in parent_wanted], parent_new


# ---------------------------------------------------------------------------------------- the commit


def commit_step(registry, step: StepOutcome, *, parent: Version, skill: str, how: str, ref: str, expected_head: Optional[str],
                recipe: dict[str, Any], delta_dir: Path, demo_set_id: Optional[int], timings: dict[str, float],
                message: str, parent_dir: Optional[Path] = None) -> Version:
    """Commit a step as ONE version on `ref` (compare-and-swap against `expected_head`) with its
    learn run and scores; then record the parent's new scores.

    `delta_dir` holds the finetune (`store_finetune`); with `parent_dir` (the parent's weights)
    the version is stored as a pack against them, whole only while it is a ref's head.
    """
    if step.trainer is not None:
        recipe = {**recipe, "finetune_cmd_run": trainer_record(step.trainer, delta_dir)}
    run = NewLearnRun(skill=skill, demo_set_id=demo_set_id, recipe=recipe, delta_dir=str(delta_dir), alpha=step.alpha.to_json(),
                      sweep=step.sweep, timings=timings)
    version = registry.commit_version(
        step.merged, parent=parent.name, how=how, ref=ref, expected_head=expected_head, config=parent.config, recipe=recipe,
        learn_run=run, scores=[r.to_new_score() for r in step.scores], message=message, parent_weights=parent_dir,
    )
    if step.parent_new_scores:  # after the commit: an interrupted step must leave the registry as it was
        registry.record_scores(parent.name, [r.to_new_score() for r in step.parent_new_scores])
    return version
