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

The step itself (finetune, alpha, merge, scores, the commit) lives in retain.learn_step, shared
with `replay`; the options in retain.learn_options.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from registry.errors import invalid, not_found
from registry.records import Version
from retain.evaluate import ood_settings, sim_skills
from retain.finetune import RECIPE_VERSION
from retain.learn_demos import Demos, check_builtin, check_demos_store, demos_reference, expected_shapes, load_demos
from retain.learn_options import LearnOptions, mark_finetune_cmd
from retain.learn_scoring import SkillScore, stored_rows
from retain.learn_step import Say, StageTimer, commit_step, run_step, say_nothing, say_on_stderr, store_finetune
from retain.policies import policy_of
from retain.provenance import code_version, runtime


@dataclasses.dataclass(frozen=True)
class LearnResult:
    version: Version
    parent: str
    skill: str
    alpha: Any  # as recorded: a float, or {modality: float}
    validation_family: str
    held_out: list[str]
    sweep: list[dict[str, Any]]
    scores: list[SkillScore]
    finetuned_scores: list[SkillScore]
    demo_set_id: Optional[int]
    timings: dict[str, float]
    parent_scores: list[SkillScore] = dataclasses.field(default_factory=list)
    kept: Optional[dict[str, Any]] = None  # the lineage check (constraints, table, candidates), if one ran


def require_head(registry, ref: str) -> Version:
    head = registry.head(ref)
    if head is None:
        raise not_found(f"ref {ref!r} does not exist; learn on an existing ref (see `retain lineage`) or put a base there first "
                        f"(`retain base import PATH --ref {ref}` or `retain pretrain --ref {ref}`)")
    return head


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
    from registry.names import check_plain_name

    opts = opts or LearnOptions()
    say = say or (say_on_stderr if progress else say_nothing)
    check_plain_name("skill", task)
    head = require_head(registry, ref)
    if demos is None and finetuned is None:
        check_builtin(task)
    check_demos_store(demos_store, demos)
    if opts.eval_cmd:
        from retain.external_eval import command_for

        command_for(opts.eval_cmd, "x")  # a template without {checkpoint} fails before any work
    if finetuned is not None and opts.finetune_cmd:
        raise invalid("--finetuned takes weights finetuned already and --finetune-cmd runs your trainer; pass one of them")
    if finetuned is not None and opts.finetune.rehearse:
        raise invalid("--rehearse shapes the finetune, and --finetuned weights were finetuned elsewhere; drop one of them")
    if finetuned is not None and not Path(finetuned).exists():
        raise not_found(f"--finetuned {finetuned} does not exist; pass a safetensors file or folder")
    # demos checked against the built-in policy: for its own finetune, or rendered for it by the simulator
    own_policy = finetuned is None and (opts.finetune_cmd is None or demos is None)
    if own_policy:
        adapter, policy_config = policy_of(head.config)
        if opts.finetune.lr_scale:  # against the head's tensor names now, not after the demos are collected
            from retain.train import check_lr_scale, parse_lr_scale

            check_lr_scale(parse_lr_scale(opts.finetune.lr_scale), registry.tensor_names(head.name))
    if opts.auto and not opts.eval_cmd and not (head.config.get("policy") and task in sim_skills()):
        raise invalid(f"cannot choose alpha for {task!r}: the simulator cannot score it; pass --eval-cmd 'CMD {{checkpoint}}' "
                      "(your evaluator) or a fixed --alpha such as 0.5")
    if not opts.eval_cmd and head.config.get("policy") and opts.val_family not in ood_settings():
        raise invalid(f"validation family {opts.val_family!r} is not one of the simulator's: {', '.join(ood_settings())}")
    if opts.keep and opts.keep != ("none",):
        from retain.learn_keep import lineage_checks

        if not opts.auto or opts.eval_cmd or not head.config.get("policy"):
            raise invalid("--keep checks candidates of the alpha search in the simulator; drop --keep, or --alpha / --eval-cmd")
        lineage_checks(registry, head, task, opts.keep)  # a skill not in the lineage: refused before any work
    t0 = time.perf_counter()
    timer = StageTimer()
    with (tempfile.TemporaryDirectory(prefix="retain-learn-", dir=work_dir) if work_dir else registry.work_folder("learn")) as tmp:
        work = Path(tmp)
        d = None
        if finetuned is None or demos is not None:  # outside weights may come without their demos
            with timer("demos"):
                d = load_demos(task, demos, work, episodes=opts.demo_episodes, seed=opts.demo_seed, say=say,
                               expect=expected_shapes(adapter, policy_config) if own_policy else None,
                               decode_images=not (opts.finetune_cmd and demos is not None))  # your trainer reads them
        step = run_step(registry, head, task, d.frames if d else None, opts, work / "step", finetuned_source=Path(finetuned) if finetuned else None,
                        progress=progress, say=say, demos_ref=demos if demos is not None else (str(d.folder) if d else None))
        with timer("delta"):
            delta = store_finetune(step, work / "delta")
        recipe = learn_recipe(task, opts, d, head, finetuned=finetuned, finetuned_hash=delta.target_hash if finetuned else None,
                              rehearsed=step.rehearsed)
        reference = demos_reference(d, demos, demos_store) if d is not None else None
        if reference:
            recipe["demos"]["stored"] = "by reference"
        if step.kept:
            recipe["lineage_check"] = step.kept
        timings = {**{k: v for k, v in timer.timings.items() if k == "demos"}, **step.timings, "delta": timer.timings["delta"]}
        say(f"committing: alpha {step.alpha} onto {ref} (expected head {head.name})")
        with timer("commit"):
            demo_set = None
            if d is not None:
                registry.ensure_skill(task, instructions=list(dict.fromkeys(d.frames.tasks)))
                demo_set = registry.put_demo_set(task, d.folder, source=d.source, episodes=d.episodes, frames=len(d.frames),
                                                 reference=reference)
            timings["total"] = round(time.perf_counter() - t0, 3)
            version = commit_step(registry, step, parent=head, skill=task, how="learn", ref=ref, expected_head=head.name,
                                  recipe=recipe, delta_dir=work / "delta", demo_set_id=demo_set.id if demo_set else None,
                                  timings=timings, message=f"learn {task} (alpha {step.alpha}, {recipe['mode']})",
                                  parent_dir=work / "step" / "parent")
    held_out = [f for f in ood_settings() if f != opts.val_family] if step.scores and not opts.eval_cmd else []
    return LearnResult(version, head.name, task, step.alpha.to_json(), opts.val_family, held_out, step.sweep, step.scores,
                       step.finetuned_scores, demo_set.id if demo_set else None, timings,
                       _with_recorded(registry, head.name, step.parent_scores, step.scores), step.kept)


def _with_recorded(registry, parent: str, rows: list[SkillScore], merged: list[SkillScore]) -> list[SkillScore]:
    """The parent's rows for the comparison: those this step scored, then, for the other (skill,
    split) pairs the merge was scored on (the earlier skills), what the parent has recorded."""
    out = {(r.skill, r.split): r for r in rows}
    wanted = {(r.skill, r.split) for r in merged}
    for r in stored_rows(registry, parent):
        key = (r.skill, r.split)
        if key in wanted and key not in out:
            out[key] = r
    return list(out.values())


def learn_recipe(task: str, opts: LearnOptions, demos: Optional[Demos], parent: Version, *, finetuned: Optional[str] = None,
                 finetuned_hash: Optional[str] = None, rehearsed: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """What the version and its learn run record: every option (flat, so `show` reads well and
    `LearnOptions.from_recipe` rebuilds them for replay), the demos, the parent, the code version and the numeric runtime."""
    recipe: dict[str, Any] = {
        "skill": task, **opts.record(),
        "demos": {"source": demos.source, "episodes": demos.episodes, "frames": len(demos.frames)} if demos else None,
        "parent": parent.name, "code_version": code_version(), "runtime": runtime(opts.finetune.device),
        "finetune_recipe_version": RECIPE_VERSION,
    }
    if rehearsed:
        recipe["rehearsed"] = rehearsed
    if finetuned:
        recipe.update({"mode": "external", "finetuned_source": str(finetuned), "finetuned_hash": finetuned_hash})
        for k in ("mix", "rehearse", "steps", "lr", "batch_size", "seed", "threads", "nproc", "pretrain_episodes", "device", "bf16"):
            recipe.pop(k)
        recipe.pop("compile", None)  # recorded only when on
    if opts.finetune_cmd:
        mark_finetune_cmd(recipe)
    return recipe
