"""`learn`: teach the backbone at the head of a ref one new skill, RETAIN-style, and commit it.

    demos ──► finetune (from the ref's head) ──► choose alpha on ONE OOD family ──► merge
          ──► evaluate every skill of the lineage + the generalist suite ──► commit ONE version

The commit carries the finetuned delta, the alpha and the sweep that chose it, the recipe (enough
for `replay` to run it again), timings and scores, and moves the ref by compare-and-swap: if
another commit moved it meanwhile, the run stops with a conflict and commits nothing. All work
happens in a temporary folder; an interrupt at any point leaves the registry as it was.

The alpha is chosen on one validation family (`validation_family`, recorded); the other OOD
families are reported as held out, so the choice is never graded on its own validation data.
Beside the merged backbone the plain finetune (alpha = 1) is scored on the same paired episodes
of the new skill, so the record shows what merging bought. With `rehearse` the finetune also
draws that share of each batch from the stored demos of the skills learned earlier along the ref
(merging alone does not keep them: the language search keeps the whole vision and action delta).

Example (Python API; the CLI is a thin layer over this):
    >>> from registry.api import Registry
    >>> from retain.learn import learn, LearnOptions
    >>> with Registry.open() as reg:
    ...     result = learn(reg, "plates", LearnOptions(alpha="auto", episodes=50))
    ...     result.version.name, result.alpha
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from registry.errors import invalid, not_found
from registry.records import NewLearnRun, Version
from retain.finetune import RECIPE_VERSION, FinetuneRecipe, policy_of
from retain.eval_pool import checkpoint_bytes
from retain.learn_demos import Demos, check_builtin, check_demos_store, demos_reference, expected_shapes, load_demos
from retain.learn_scoring import GENERALIST, Job, Scorer, ScoreRow, evaluation_jobs, ood_families, sim_skills
from retain.provenance import code_version, runtime
from retain.select import DEFAULT_GRID, STRATEGIES, Selection, alpha_key, alpha_to_json, check_grid, get_strategy, tie_warning

DEFAULT_VALIDATION = "ood:position"
Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LearnOptions:
    """How one skill is learned. Every field lands in the recorded recipe."""

    mode: str = "task-ft"
    """task-ft (demos alone) or co-ft (mix pretraining data in at `mix`)."""
    mix: Optional[float] = None
    """co-ft: share of each batch from pretraining data, in [0, 1) (default 0.2 for co-ft, 0 for task-ft)."""
    rehearse: float = 0.0
    """Share of each batch from the stored demos of the skills learned earlier along the ref (any
    mode; 0: none). Rehearsal keeps them in the finetune, so the delta need not overwrite them."""
    alpha: str = "auto"
    """"auto" (search with `strategy`), or a fixed alpha: "0.5" or "vision=1,language=0.8,action=1"."""
    strategy: str = "language"
    """auto only: language (language alpha, vision = action = 1: the paper's recommendation, and on the
    built-in testbed the only search that keeps the new skill: one alpha <= 0.75 for every modality
    loses it), grid (one alpha for every modality), coordinate (per modality, language first)."""
    alpha_grid: tuple[float, ...] = DEFAULT_GRID
    """Candidate alphas for the search, each in [0, 1]."""
    validation_family: Optional[str] = None
    """The ONE OOD family alpha is chosen on (default ood:position; "external" with an eval command)."""
    # Finetune defaults follow the testbed report (benchmarks/testbed.py): all weights, BC.
    steps: int = 300
    lr: float = 5e-4
    lr_scale: str = ""
    """Learning-rate multipliers by module for the finetune, e.g. "vision=0.1"."""
    batch_size: int = 32
    seed: int = 0
    threads: int = 1
    """torch threads per finetune process (recorded: it changes float rounding). One thread is robust
    on a busy machine and is where the recorded figures were measured; --threads 2 or
    --nproc-per-node 2 train on two cores."""
    nproc: int = 1
    """Finetune under torchrun/DDP with this many processes when > 1."""
    pretrain_episodes: int = 200
    """co-ft: episodes of pretraining data regenerated from the base's recorded recipe."""
    demo_episodes: int = 50
    """Built-in demos: expert episodes collected in the narrow ID setting."""
    demo_seed: int = 0
    episodes: int = 50
    """Evaluation episodes per (skill, split); the same seed across versions and alphas (paired)."""
    eval_seed: int = 12345
    compare_finetuned: bool = True
    """Also score the plain finetune (alpha = 1) on the new skill, for the record."""
    eval_cmd: Optional[str] = None
    """Score candidates with the user's evaluator ('CMD {checkpoint}' printing JSON) instead of the simulator."""
    preset: Optional[str] = None
    """Partition preset (default: the policy's own)."""

    def __post_init__(self) -> None:
        if self.mix is None:
            object.__setattr__(self, "mix", 0.2 if self.mode == "co-ft" else 0.0)
        object.__setattr__(self, "alpha_grid", check_grid(self.alpha_grid))
        if self.alpha != "auto":
            from retain.alphas import parse_alpha

            parse_alpha(self.alpha)
        elif self.strategy not in STRATEGIES or self.strategy == "fixed":
            raise invalid(f"unknown alpha strategy {self.strategy!r}; choose one of grid, language, coordinate")
        if self.episodes < 1:
            raise invalid(f"--episodes must be at least 1, got {self.episodes}")
        if self.demo_episodes < 1:
            raise invalid(f"--demo-episodes must be at least 1, got {self.demo_episodes}")
        if self.validation_family is not None and self.eval_cmd is None and not self.validation_family.startswith("ood:"):
            raise invalid(f"validation family {self.validation_family!r} is not an OOD family; use e.g. ood:position")
        # validates mode, mix, steps, lr, nproc; the recipe records the scales' canonical text
        object.__setattr__(self, "lr_scale", self.finetune_recipe().lr_scale)

    @property
    def val_family(self) -> str:
        if self.validation_family:
            return self.validation_family
        return "ood:external" if self.eval_cmd else DEFAULT_VALIDATION

    def finetune_recipe(self) -> FinetuneRecipe:
        return FinetuneRecipe(
            mode=self.mode, mix=float(self.mix or 0.0), steps=self.steps, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            threads=self.threads, nproc=self.nproc, pretrain_episodes=self.pretrain_episodes if self.mode == "co-ft" else 0,
            lr_scale=self.lr_scale, rehearse=float(self.rehearse),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alpha_grid"] = list(self.alpha_grid)
        return d

    def record(self) -> dict[str, Any]:
        """The options as a recipe records them (the validation family resolved)."""
        return {**self.to_dict(), "validation_family": self.val_family}

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], **changes: Any) -> "LearnOptions":
        """The options a recorded recipe was learned with, with `changes` applied (None keeps)."""
        known = {f.name for f in dataclasses.fields(cls)}
        base = {k: v for k, v in recipe.items() if k in known}
        base.setdefault("lr_scale", "")  # recorded before the option existed: one rate for every weight
        if base.get("mode") == "external":  # weights finetuned elsewhere: no finetune options apply
            base["mode"] = "task-ft"
        base.update({k: v for k, v in changes.items() if v is not None})
        if "alpha_grid" in base:
            base["alpha_grid"] = tuple(base["alpha_grid"])
        return cls(**base)


@dataclasses.dataclass
class StepOutcome:
    """What running one skill's step produced (in the work folder) before anything is committed."""

    finetuned: Path
    merged: Path
    alpha: Any  # JSON form: float or {modality: float}
    selection: Optional[Selection]
    sweep: list[dict[str, Any]]
    scores: list[ScoreRow]
    finetuned_scores: list[ScoreRow]
    timings: dict[str, float]
    parent_scores: list[ScoreRow] = dataclasses.field(default_factory=list)  # the parent on the new skill + generalist
    parent_new_scores: list[ScoreRow] = dataclasses.field(default_factory=list)  # those the parent had not recorded yet
    rehearsed: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the earlier demo sets the finetune mixed in


@dataclasses.dataclass(frozen=True)
class LearnResult:
    version: Version
    parent: str
    skill: str
    alpha: Any
    validation_family: str
    held_out: list[str]
    sweep: list[dict[str, Any]]
    scores: list[ScoreRow]
    finetuned_scores: list[ScoreRow]
    demo_set_id: Optional[int]
    timings: dict[str, float]
    parent_scores: list[ScoreRow] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------- helpers


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg: str) -> None:
    pass


class _Timer:
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


def require_head(registry, ref: str) -> Version:
    head = registry.head(ref)
    if head is None:
        raise not_found(f"ref {ref!r} does not exist; learn on an existing ref (see `retain lineage`) or put a base there first "
                        f"(`retain base import PATH --ref {ref}` or `retain pretrain --ref {ref}`)")
    return head


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
    from retain.train import frames_from

    expect = expected_shapes(*policy_of(parent.config)) if (parent.config or {}).get("policy") else {}
    return frames_from(read_dataset(registry.fetch_demo_set(demo_set_id, dest), **expect))


def rehearsal_frames(registry, parent: Version, sets: list[dict[str, Any]], work: Path):
    """The frames of `sets` as one DemoFrames."""
    from retain.train import concat_frames

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


def merge_to(parent: Path, finetuned: Path, alpha: Any, partition, dest: Path) -> Path:
    from retain.merge import merge_checkpoints

    merge_checkpoints(parent, [finetuned], [alpha], partition, dest, progress=False)
    return dest


def choose_alpha(
    parent: Path, finetuned: Path, partition, skill: str, opts: LearnOptions, scorer: Scorer, work: Path,
    progress: bool, say: Say,
) -> tuple[Any, Optional[Selection], dict[str, Path], dict[str, ScoreRow]]:
    """(alpha, selection, candidate folders by alpha key, validation rows by alpha key)."""
    from retain.alphas import parse_alpha

    cands: dict[str, Path] = {}
    rows: dict[str, ScoreRow] = {}

    def candidate(alpha: Any) -> Path:
        key = alpha_key(alpha)
        if key not in cands:
            cands[key] = merge_to(parent, finetuned, alpha, partition, work / f"cand-{len(cands)}")
        return cands[key]

    if opts.alpha != "auto":
        alpha = parse_alpha(opts.alpha).to_json()
        candidate(alpha)
        return alpha, None, cands, rows
    strategy = get_strategy(opts.strategy)
    can_score = bool(opts.eval_cmd) or (scorer.sim and skill in sim_skills())
    if not can_score:
        raise invalid(f"cannot choose alpha for {skill!r}: it is not a simulator skill; pass --eval-cmd 'CMD {{checkpoint}}' or a fixed --alpha")
    say(f"choosing alpha ({opts.strategy} over {', '.join(f'{g:g}' for g in opts.alpha_grid)}) on {opts.val_family}")
    bar = _progress_bar(progress, "alpha sweep")

    # The first round does not depend on any score: evaluate it side by side before the strategy asks.
    first = strategy.first_round(opts.alpha_grid)
    early = dict(zip(map(alpha_key, first), scorer.validations([candidate(a) for a in first], skill)))

    def score(alpha: Any) -> float:
        key = alpha_key(alpha)
        row = early.pop(key) if key in early else scorer.validation(candidate(alpha), skill)
        rows[key] = row
        if bar is not None:
            bar.update(1)
            bar.set_postfix(alpha=alpha_key(alpha), rate=f"{row.rate:.2f}")
        return row.rate

    try:
        sel = strategy.choose(score, grid=opts.alpha_grid)
    finally:
        if bar is not None:
            bar.close()
    warning = tie_warning(sel, opts.val_family)
    if warning:
        _stderr(warning)  # even under --quiet: it says the recorded alpha rests on no evidence
    return alpha_to_json(sel.alpha), sel, cands, rows


def _progress_bar(show: bool, desc: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, file=sys.stderr, leave=False, unit="alpha")


def sweep_record(selection: Optional[Selection], rows: dict[str, ScoreRow], family: str) -> list[dict[str, Any]]:
    if selection is None:
        return []
    return [{"alpha": alpha_to_json(p["alpha"]), "role": "candidate", "scores": {family: rows[alpha_key(p["alpha"])].brief()}}
            for p in selection.sweep]


# ---------------------------------------------------------------------------------------- the step


def run_step(
    registry, parent: Version, skill: str, frames: Any, opts: LearnOptions, work: Path, *,
    finetuned_source: Optional[Path] = None, alpha_override: Any = None, score: bool = True,
    progress: bool = False, say: Say = _quiet, parent_dir: Optional[Path] = None,
) -> StepOutcome:
    """Finetune (or take `finetuned_source`), choose alpha, merge, evaluate: everything but the commit.

    `alpha_override` (JSON alpha) skips the search; `score=False` skips the evaluations (replay's
    verification only needs the bytes); `parent_dir` is the parent's weights when the caller has
    already checked them out.
    """
    timer = _Timer()
    bars = progress and sys.stderr.isatty()  # stage lines go to logs too; bars only to a terminal
    work.mkdir(parents=True, exist_ok=True)
    with timer("checkout"):
        if parent_dir is None:
            parent_dir = registry.checkout(parent.name, work / "parent")
    with Scorer(parent.config, episodes=opts.episodes, seed=opts.eval_seed, validation_family=opts.val_family,
                eval_cmd=opts.eval_cmd, progress=bars, model_bytes=checkpoint_bytes(parent_dir)) as scorer:
        if score or (alpha_override is None and opts.alpha == "auto"):
            scorer.start()  # the evaluation workers import torch while this process finetunes
        return _run_step(registry, parent, skill, frames, opts, work, scorer, timer, parent_dir, finetuned_source,
                         alpha_override, score, bars, say)


def _run_step(registry, parent: Version, skill: str, frames: Any, opts: LearnOptions, work: Path, scorer: Scorer,
              timer: "_Timer", parent_dir: Path, finetuned_source: Optional[Path], alpha_override: Any, score: bool,
              bars: bool, say: Say) -> StepOutcome:
    from retain.finetune import finetune
    from retain.partitions import get_partition_map

    preset = opts.preset or (scorer.adapter.partition_preset if scorer.adapter else None)
    if preset is None:
        raise invalid(f"{parent.name} records no policy, so its partition is unknown; pass --preset (e.g. openpi-pi0)")
    partition = get_partition_map(preset)
    rehearsed: list[dict[str, Any]] = []
    if finetuned_source is not None:
        check_same_layout(parent_dir, finetuned_source, parent.name)
        ft_dir = finetuned_source
    else:
        recipe = opts.finetune_recipe()
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
        chosen = opts if alpha_override is None else dataclasses.replace(opts, alpha=alpha_spec(alpha_override))
        alpha, selection, cands, val_rows = choose_alpha(parent_dir, ft_dir, partition, skill, chosen, scorer, work, bars, say)
    merged = cands.pop(alpha_key(alpha))
    for other in cands.values():  # candidates of a multi-GB model add up: keep only the chosen merge
        shutil.rmtree(other, ignore_errors=True)
    scores: list[ScoreRow] = []
    ft_scores: list[ScoreRow] = []
    sweep = sweep_record(selection, val_rows, opts.val_family)
    parent_rows: list[ScoreRow] = []
    parent_new: list[ScoreRow] = []
    if score:
        with timer("evaluate"):
            scores, ft_scores, parent_rows, parent_new = _score_step(registry, parent, parent_dir, skill, opts, scorer,
                                                                     merged, ft_dir, alpha, val_rows, say)
        if parent_rows and opts.compare_finetuned:
            sweep.append({"alpha": 0.0, "role": "parent", "scores": {r.split: r.brief() for r in parent_rows}})
        if ft_scores:
            sweep.append({"alpha": 1.0, "role": "finetuned", "scores": {r.split: r.brief() for r in ft_scores}})
    return StepOutcome(ft_dir, merged, alpha, selection, sweep, scores, ft_scores, timer.timings, parent_rows, parent_new,
                       rehearsed)


def _parent_jobs(registry, parent: Version, skill: str, opts: LearnOptions) -> tuple[list[Job], dict[Job, ScoreRow]]:
    """The parent (alpha 0) on the generalist suite and, for the comparison, on the new skill, with
    the scores it already has.

    Generalist retention is measured against the chain's root, so every parent needs that score;
    scores the parent already has are reused, the others evaluated (and recorded after the commit).
    """
    wanted = [(skill, "id")] + [(skill, f) for f in ood_families()] if opts.compare_finetuned and skill in sim_skills() else []
    wanted.append((None, GENERALIST))
    have = {(s.skill, s.split): ScoreRow(s.skill, s.split, s.successes, s.episodes, s.rate, s.ci_low, s.ci_high, s.evaluator, s.seed)
            for s in registry.scores(parent.name)}
    return wanted, {j: have[j] for j in wanted if j in have}


def alpha_spec(alpha: Any) -> str:
    """An alpha (float, dict or string) in the syntax every command accepts."""
    from retain.alphas import as_alpha

    return alpha if isinstance(alpha, str) else str(as_alpha(alpha))


def _score_step(registry, parent: Version, parent_dir: Path, skill: str, opts: LearnOptions, scorer: Scorer,
                merged: Path, ft_dir: Path, alpha: Any, val_rows: dict[str, ScoreRow], say: Say
                ) -> tuple[list[ScoreRow], list[ScoreRow], list[ScoreRow], list[ScoreRow]]:
    """Scores of the merged backbone, the plain finetune and the parent (rows, and the parent's new rows)."""
    scores: list[ScoreRow] = []
    ft_scores: list[ScoreRow] = []
    chosen_val = val_rows.get(alpha_key(alpha))
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


# ---------------------------------------------------------------------------------------- learn


def learn(
    registry, task: str, opts: Optional[LearnOptions] = None, *, demos: Optional[str] = None, ref: str = "main",
    finetuned: Optional[str] = None, progress: bool = False, say: Optional[Say] = None, work_dir: Optional[str] = None,
    demos_store: str = "auto",
) -> LearnResult:
    """Learn `task` on top of the head of `ref` and commit ONE new version (see the module docstring).

    Args:
        registry: an open registry.api.Registry.
        task: the skill name (a built-in simulator skill, or any name with `demos`).
        demos: a LeRobot-format folder or fsspec URL (default: built-in expert demos for built-in tasks).
        demos_store: how the registry keeps `demos`: "copy" into the blob store, "reference" (its location
            and a manifest of its files' hashes), or "auto" (by reference above 1 GiB).
        finetuned: weights finetuned elsewhere from the head's weights: skips the finetune.
        progress: stage lines on stderr, and progress bars when stderr is a terminal.
    Returns:
        LearnResult with the committed version, alpha, sweep, scores and timings.
    Raises:
        RegistryError: bad input (one line naming the fix), or CONFLICT if the ref moved meanwhile.
    """
    from registry.checkpoint import check_plain_name
    from retain.delta import write_delta

    opts = opts or LearnOptions()
    say = say or (_stderr if progress else _quiet)
    check_plain_name("skill", task)
    head = require_head(registry, ref)
    if demos is None and finetuned is None:
        check_builtin(task)
    check_demos_store(demos_store, demos)
    if opts.eval_cmd:
        from retain.external_eval import command_for

        command_for(opts.eval_cmd, "x")  # a template without {checkpoint} fails before any work
    if finetuned is not None and opts.rehearse:
        raise invalid("--rehearse shapes the finetune, and --finetuned weights were finetuned elsewhere; drop one of them")
    if finetuned is not None and not Path(finetuned).exists():
        raise not_found(f"--finetuned {finetuned} does not exist; pass a safetensors file or folder")
    if finetuned is None:
        adapter, policy_config = policy_of(head.config)
    if opts.alpha == "auto" and not opts.eval_cmd and not (head.config.get("policy") and task in sim_skills()):
        raise invalid(f"cannot choose alpha for {task!r}: the simulator cannot score it; pass --eval-cmd 'CMD {{checkpoint}}' "
                      "(your evaluator) or a fixed --alpha such as 0.5")
    if not opts.eval_cmd and head.config.get("policy") and opts.val_family not in ood_families():
        raise invalid(f"validation family {opts.val_family!r} is not one of the simulator's: {', '.join(ood_families())}")
    t0 = time.perf_counter()
    timer = _Timer()
    with tempfile.TemporaryDirectory(prefix="retain-learn-", dir=work_dir) as tmp:
        work = Path(tmp)
        d = None
        if finetuned is None or demos is not None:  # outside weights may come without their demos
            with timer("demos"):
                d = load_demos(task, demos, work, episodes=opts.demo_episodes, seed=opts.demo_seed, say=say,
                               expect=expected_shapes(adapter, policy_config) if finetuned is None else None)
        step = run_step(registry, head, task, d.frames if d else None, opts, work / "step", finetuned_source=Path(finetuned) if finetuned else None,
                        progress=progress, say=say)
        with timer("delta"):
            delta = write_delta(work / "step" / "parent", step.finetuned, work / "delta")
        recipe = learn_recipe(task, opts, d, head, finetuned=finetuned, finetuned_hash=delta.finetuned_hash if finetuned else None,
                              rehearsed=step.rehearsed)
        reference = demos_reference(d, demos, demos_store) if d is not None else None
        if reference:
            recipe["demos"]["stored"] = "by reference"
        timings = {**{k: v for k, v in timer.timings.items() if k == "demos"}, **step.timings, "delta": timer.timings["delta"]}
        say(f"committing: alpha {alpha_key(step.alpha)} onto {ref} (expected head {head.name})")
        with timer("commit"):
            demo_set = None
            if d is not None:
                registry.ensure_skill(task, instructions=list(dict.fromkeys(d.frames.tasks)))
                demo_set = registry.put_demo_set(task, d.folder, source=d.source, episodes=d.episodes, frames=len(d.frames),
                                                 reference=reference)
            timings["total"] = round(time.perf_counter() - t0, 3)
            run = NewLearnRun(skill=task, demo_set_id=demo_set.id if demo_set else None, recipe=recipe, delta_dir=str(work / "delta"),
                              alpha=step.alpha, sweep=step.sweep, timings=timings)
            version = registry.commit_version(
                step.merged, parent=head.name, how="learn", ref=ref, expected_head=head.name, config=head.config,
                recipe=recipe, learn_run=run, scores=[s.to_new_score() for s in step.scores],
                message=f"learn {task} (alpha {alpha_key(step.alpha)}, {opts.mode})",
            )
            if step.parent_new_scores:  # after the commit: an interrupted learn must leave the registry as it was
                registry.record_scores(head.name, [s.to_new_score() for s in step.parent_new_scores])
    held_out = [f for f in ood_families() if f != opts.val_family] if step.scores and not opts.eval_cmd else []
    return LearnResult(version, head.name, task, step.alpha, opts.val_family, held_out, step.sweep, step.scores,
                       step.finetuned_scores, demo_set.id if demo_set else None, timings, step.parent_scores)


def learn_recipe(task: str, opts: LearnOptions, demos: Optional[Demos], parent: Version, *, finetuned: Optional[str] = None,
                 finetuned_hash: Optional[str] = None, rehearsed: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """What the version and its learn run record: every option (flat, so `show` reads well and
    `LearnOptions.from_recipe` rebuilds them for replay), the demos, the parent, the code version and the numeric runtime."""
    recipe: dict[str, Any] = {
        "skill": task, **opts.record(),
        "demos": {"source": demos.source, "episodes": demos.episodes, "frames": len(demos.frames)} if demos else None,
        "parent": parent.name, "code_version": code_version(), "runtime": runtime(), "finetune_recipe_version": RECIPE_VERSION,
    }
    if rehearsed:
        recipe["rehearsed"] = rehearsed
    if finetuned:
        recipe.update({"mode": "external", "finetuned_source": str(finetuned), "finetuned_hash": finetuned_hash})
        for k in ("mix", "rehearse", "steps", "lr", "batch_size", "seed", "threads", "nproc", "pretrain_episodes"):
            recipe.pop(k)
    return recipe
