"""`replay`: run a recorded chain of learned skills again, from its stored demo sets and recipes.

    replay(reg, ["plates", "whiteboard"])                    # verify: same start, same recipes
    replay(reg, ["plates", "whiteboard"], start="v7")        # rebase the chain onto another base
    replay(reg, ["whiteboard"], alpha="0.25")                # what if another alpha had been chosen
    replay(reg, ["plates", "whiteboard"], rehearse=0.2)      # the chain again, rehearsing earlier skills

With nothing changed it re-runs every finetune and merge and compares the bytes with the recorded
ones (the finetuned weights against the hash stored with the delta, the merged weights against
the version's hash). It commits nothing and says, per step, whether the hashes match bit for bit,
or which weights differ and by how much. Each step starts from the RECORDED parent, so a
difference is pinned to the step that made it.

With a change (another start version, alpha, mode or rehearsal share) it builds the chain on a new
branch (how = "replay"), step by step, and returns the new versions' scores beside the original
chain's. A rehearsal share applies to every step with something to rehearse: the first skill of a
chain started on a bare base has no earlier demos, so it is finetuned as recorded (and said so).

A step whose weights were finetuned elsewhere (`learn --finetuned`) cannot be finetuned again; its
finetuned weights are rebuilt from the stored delta, which only fits the recorded parent.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from registry.checkpoint import bf16_to_float32
from registry.errors import RegistryError, already_exists, invalid, invalid_state, not_found
from registry.records import LearnRun, Version
from retain.alphas import Alpha, as_alpha
from retain.learn_options import LearnOptions, mark_finetune_cmd
from retain.learn_scoring import SkillScore, stored_rows
from retain.learn_step import (
    Say,
    commit_step,
    pretraining_recipe,
    rehearsal_sets,
    run_step,
    say_nothing,
    say_on_stderr,
    stored_demo_frames,
    store_finetune,
)
from retain.device import resolve_device
from retain.provenance import code_version, runtime, runtime_changes


@dataclasses.dataclass(frozen=True)
class ChainStep:
    skill: str
    run: LearnRun
    parent: Version
    version: Version


@dataclasses.dataclass(frozen=True)
class WeightDiff:
    """How two checkpoints differ: tensors with any differing element, the largest |a - b| and where."""

    tensors: int
    differing: int
    max_abs: float
    worst: Optional[str]

    def text(self) -> str:
        if not self.differing:
            return "identical values"
        return f"{self.differing} of {self.tensors} tensors differ, max |diff| {self.max_abs:.3g} in {self.worst}"


@dataclasses.dataclass(frozen=True)
class StepCheck:
    skill: str
    recorded: str  # the recorded version
    parent: str
    finetune: str  # "reproduced" | "differs" | "drift-accepted" (a --finetune-cmd trainer, --accept-drift) | "rebuilt-from-delta"
    finetuned_hash: str
    recorded_finetuned_hash: str
    finetune_diff: Optional[WeightDiff]
    merge_hash: str
    recorded_hash: str
    merge_diff: Optional[WeightDiff]
    alpha: Any
    seconds: float
    recorded_code: str = ""  # code version the step was recorded with
    code: str = ""  # code version of this replay
    runtime_changes: str = ""  # e.g. "numpy 2.3.1 -> 2.4.6": the numeric runtime since the record

    @property
    def reproduced(self) -> bool:
        return self.merge_hash == self.recorded_hash and self.finetune in ("reproduced", "rebuilt-from-delta")

    @property
    def ok(self) -> bool:
        """Reproduced, or drifted only because the user's trainer is not bit-reproducible and that was accepted."""
        return self.reproduced or self.finetune == "drift-accepted"

    @property
    def code_note(self) -> str:
        """Why bytes may differ: other code or another numeric runtime than the record's ('' if neither)."""
        notes = [] if not self.recorded_code or self.recorded_code == self.code else [
            f"recorded with code {self.recorded_code}, replayed with {self.code}"]
        if self.runtime_changes:
            notes.append(f"runtime since the record: {self.runtime_changes}")
        return f" ({'; '.join(notes)})" if notes else ""


@dataclasses.dataclass(frozen=True)
class ReplayedStep:
    skill: str
    recorded: Version
    new: Version
    alpha: Any
    recorded_alpha: Any
    recorded_scores: list[SkillScore]  # the recorded version's scores
    scores: list[SkillScore]


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    tasks: list[str]
    start: str
    changed: bool
    changes: dict[str, Any]
    checks: list[StepCheck]  # verification (nothing changed)
    branch: Optional[str]
    steps: list[ReplayedStep]  # the new chain (something changed)

    @property
    def reproduced(self) -> bool:
        return not self.changed and all(c.reproduced for c in self.checks)

    @property
    def ok(self) -> bool:
        """Every step reproduced, or drifted only where --accept-drift allowed it."""
        return not self.changed and all(c.ok for c in self.checks)


# ---------------------------------------------------------------------------------------- the chain


def recorded_chain(registry, tasks: Sequence[str], of: Optional[str] = None) -> list[ChainStep]:
    """The recorded steps that learned `tasks` one after another, ending at `of` (default: the latest
    `learn` of the last task). Each step's parent must be the version the previous step made."""
    if not tasks:
        raise invalid("give at least one task to replay, e.g. `retain replay plates,whiteboard`")
    if of is not None:
        end = registry.resolve(of)
        run = registry.learn_run_for(end.name)
        if run is None or run.skill != tasks[-1]:
            raise invalid(f"{end.name} did not learn {tasks[-1]!r}" + (f" (it learned {run.skill!r})" if run else "") +
                          "; pass --of the version that learned the chain's last task")
    else:
        runs = [r for r in registry.learn_runs() if r.skill == tasks[-1] and r.result is not None]
        if not runs:
            known = sorted({r.skill for r in registry.learn_runs()})
            raise not_found(f"no recorded learn of {tasks[-1]!r} to replay; learned skills: {', '.join(known) or 'none yet'}")
        learned = [r for r in runs if registry.resolve(r.result).how == "learn"] or runs
        run = max(learned, key=lambda r: r.id)
    steps: list[ChainStep] = []
    for i in range(len(tasks) - 1, -1, -1):
        if run is None or run.skill != tasks[i]:
            prev = steps[0].parent.name
            raise invalid(
                f"the recorded chain is not {' -> '.join(tasks)}: {tasks[i + 1]} was learned on {prev}, which "
                + (f"learned {run.skill!r}" if run else "learned no skill") + f"; replay {','.join(tasks[i + 1:])} instead"
            )
        if run.parent is None:
            raise invalid(f"the learn of {run.skill} ({run.result}) records no parent; it cannot be replayed")
        steps.insert(0, ChainStep(run.skill, run, registry.resolve(run.parent), registry.resolve(run.result)))
        if i:
            run = registry.learn_run_for(run.parent)
    return steps


def _recorded_rehearse(run: LearnRun) -> float:
    return float(run.recipe.get("rehearse") or 0.0)  # recorded before rehearsal existed: none


def _options(run: LearnRun, mode: Optional[str], alpha: Optional[str], rehearse: Optional[float] = None,
             device: Optional[str] = None) -> LearnOptions:
    recipe = run.recipe
    if mode is not None and mode != recipe.get("mode"):  # another mode: its own default mix
        recipe = {k: v for k, v in recipe.items() if k != "mix"}
    return LearnOptions.from_recipe(recipe, mode=mode, rehearse=rehearse, alpha=alpha, device=device,
                                    bf16=False if device == "cpu" else None)


# ---------------------------------------------------------------------------------------- replay


def replay(
    registry, tasks: Sequence[str], *, start: Optional[str] = None, branch: Optional[str] = None, alpha: Optional[str] = None,
    mode: Optional[str] = None, rehearse: Optional[float] = None, of: Optional[str] = None, progress: bool = False,
    say: Optional[Say] = None, work_dir: Optional[str] = None, accept_drift: bool = False, device: Optional[str] = None,
) -> ReplayResult:
    """Replay the recorded chain `tasks` (see the module docstring).

    Args:
        start: the version to start from (default: where the recorded chain started).
        branch: the new branch for a changed chain (default: replay-<tasks>-from-<start>).
        alpha: "auto" (search again), a fixed alpha, or None (the recorded alpha).
        mode: task-ft / co-ft, or None (the recorded mode).
        rehearse: the share of each finetune batch from earlier skills' stored demos, or None (the
            recorded share); a step with no earlier skill on its new parent's history gets none.
        of: the version that learned the chain's last task (default: its latest `learn`).
        accept_drift: a step finetuned by the user's --finetune-cmd that does not reproduce its
            recorded finetune bit for bit is reported and the replay goes on (otherwise it stops there).
    """
    from retain.alphas import parse_alpha
    from retain.finetune import MODES

    say = say or (say_on_stderr if progress else say_nothing)
    tasks = [t.strip() for t in tasks if t.strip()]
    if mode is not None and mode not in MODES:
        raise invalid(f"unknown mode {mode!r}; use {' or '.join(MODES)}")
    if alpha is not None and alpha != "auto":
        parse_alpha(alpha)
    chain = recorded_chain(registry, tasks, of)
    for s in chain:  # a recorded GPU without one here, or an unknown device: refused before any work
        resolve_device(device or s.run.recipe.get("device") or "cpu")
    if rehearse is not None:  # a share out of range, or one that leaves no room beside a recorded mix: refused before any commit
        for s in chain:
            _options(s.run, mode, alpha, rehearse)
    first = chain[0].parent
    start_v = registry.resolve(start) if start else first
    changes: dict[str, Any] = {}
    if start_v.name != first.name:
        changes["start"] = start_v.name
    if mode is not None and any(mode != s.run.recipe.get("mode") for s in chain):
        changes["mode"] = mode
    if alpha is not None and (alpha == "auto" or any(as_alpha(s.run.alpha) != parse_alpha(alpha) for s in chain)):
        changes["alpha"] = alpha
    if rehearse is not None and any(_recorded_rehearse(s.run) != rehearse for s in chain):
        changes["rehearse"] = rehearse
    if mode == "co-ft" and "mode" in changes and pretraining_recipe(registry, start_v) is None:
        raise invalid(f"--mode co-ft needs pretraining data, but the base under {start_v.name} records no data recipe; use task-ft")
    for s in chain:
        if _external(s.run) and ("start" in changes or "mode" in changes):
            raise invalid(f"{s.skill} ({s.version.name}) was finetuned outside this tool, so it cannot be re-finetuned "
                          "on another base or mode; replay only what was learned here, or change just --alpha")
        if not _external(s.run) and s.run.demo_set_id is None:
            raise invalid(f"{s.skill} ({s.version.name}) has no stored demo set; it cannot be replayed")
    if changes.get("rehearse") and not _anything_to_rehearse(registry, chain, start_v):
        raise invalid(f"--rehearse mixes in the demos of skills learned before, but nothing with stored demos was learned "
                      f"before {chain[0].skill} along {start_v.name}'s history; replay a longer chain or start later")
    with (tempfile.TemporaryDirectory(prefix="retain-replay-", dir=work_dir) if work_dir else registry.work_folder("replay")) as tmp:
        work = Path(tmp)
        if not changes:
            say(f"replaying {' -> '.join(tasks)} from {first.name} with the recorded recipes (verifying the weight hashes)")
            try:
                checks = [_verify_step(registry, s, i, work / f"step{i}", progress, say, accept_drift, device)
                          for i, s in enumerate(chain)]
            except RegistryError as e:
                raise RegistryError(f"{e}{_code_hint(chain)}", e.code) from None
            return ReplayResult(list(tasks), first.name, False, {}, checks, None, [])
        branch = _branch_name(registry, branch, tasks, start_v.name)
        say(f"replaying {' -> '.join(tasks)} from {start_v.name} onto new branch {branch!r} with " +
            ", ".join(f"{k}={v}" for k, v in changes.items()))
        done: list[ReplayedStep] = []
        try:
            _rebuild(registry, chain, start_v, branch, mode, alpha, rehearse, changes, work, progress, say, done, device)
        except RegistryError as e:
            if not done:
                raise
            # each step is its own commit: say what the branch already holds
            raise RegistryError(f"{e} (branch {branch!r} holds the first {len(done)} replayed step(s), up to {done[-1].new.name})",
                                e.code) from None
        return ReplayResult(list(tasks), start_v.name, True, changes, [], branch, done)


def _anything_to_rehearse(registry, chain: Sequence[ChainStep], start: Version) -> bool:
    """Whether some step finetuned here will have an earlier skill's demos on its new history: from
    the start's own history, or from an earlier step of the chain itself."""
    ours = [(i, s) for i, s in enumerate(chain) if not _external(s.run)]
    if any(a.skill != s.skill and a.run.demo_set_id is not None for i, s in ours for a in chain[:i]):
        return True
    return any(rehearsal_sets(registry, start, s.skill) for _, s in ours)


def _external(run: LearnRun) -> bool:
    return run.recipe.get("mode") == "external"


def _code_hint(chain: Sequence[ChainStep]) -> str:
    """A note when the chain was recorded with other code: the usual reason a replay cannot run."""
    recorded = sorted({s.run.recipe.get("code_version") for s in chain} - {None, code_version()})
    return f" (the chain was recorded with code {', '.join(recorded)}; this is {code_version()})" if recorded else ""


def _branch_name(registry, branch: Optional[str], tasks: Sequence[str], start: str) -> str:
    from registry.names import check_plain_name

    if branch:
        check_plain_name("branch", branch)
        if registry.head(branch) is not None:
            raise already_exists(f"branch {branch!r} already exists; pass a new --branch name")
        return branch
    base = f"replay-{'-'.join(tasks)}-from-{start}"
    name, n = base, 2
    while registry.head(name) is not None:
        name, n = f"{base}-{n}", n + 1
    return check_plain_name("branch", name)


def _demo_frames(registry, run: LearnRun, work: Path, parent: Version):
    """The step's stored demos, refused with one line if they do not fit `parent`'s policy."""
    if run.demo_set_id is None:
        return None
    return stored_demo_frames(registry, run.demo_set_id, work / "demos", parent)


def _demos(registry, run: LearnRun, work: Path, parent: Version, opts: LearnOptions):
    """(frames, location): the stored demos' frames for the built-in finetune; for --finetune-cmd
    only where the dataset is (a fetched copy, or a by-reference set's own location, checked)."""
    if run.demo_set_id is not None and opts.finetune_cmd:
        return None, str(registry.fetch_demo_set(run.demo_set_id, work / "demos"))
    return _demo_frames(registry, run, work, parent), None


def _stored_finetuned(registry, run: LearnRun, parent_dir: Path, work: Path) -> tuple[Path, str]:
    """The recorded finetuned weights, rebuilt bit for bit (retain.finetune_store.recorded_finetuned)."""
    from retain.finetune_store import recorded_finetuned

    return recorded_finetuned(registry, run, parent_dir, work)


def _verify_step(registry, s: ChainStep, i: int, work: Path, progress: bool, say: Say, accept_drift: bool = False,
                 device: Optional[str] = None) -> StepCheck:
    from registry.checkpoint import open_checkpoint, weight_hash

    t0 = time.perf_counter()
    work.mkdir(parents=True)
    opts = _options(s.run, None, None, None, device)
    external = _external(s.run)
    frames, demos_ref = (None, None) if external else _demos(registry, s.run, work, s.parent, opts)
    parent_dir = registry.checkout(s.parent.name, work / "recorded-parent")
    recorded_ft, recorded_ft_hash = _stored_finetuned(registry, s.run, parent_dir, work)
    say(f"step {i + 1}: {s.skill} on {s.parent.name} (recorded {s.version.name}, alpha {as_alpha(s.run.alpha)})")
    out = run_step(registry, s.parent, s.skill, frames, opts, work / "run", finetuned_source=recorded_ft if external else None,
                   alpha_override=as_alpha(s.run.alpha), score=False, progress=progress, say=say, parent_dir=parent_dir,
                   demos_ref=demos_ref)
    with open_checkpoint(out.finetuned) as c:
        ft_hash = weight_hash(c)
    with open_checkpoint(out.merged) as c:
        merged_hash = weight_hash(c)
    ft_state = "rebuilt-from-delta" if external else ("reproduced" if ft_hash == recorded_ft_hash else "differs")
    ft_diff = weight_diff(out.finetuned, recorded_ft) if ft_state == "differs" else None
    if ft_state == "differs" and opts.finetune_cmd:
        if not accept_drift:
            raise invalid_state(f"step {i + 1}: your trainer (--finetune-cmd) is not bit-reproducible: run again on {s.parent.name} "
                                f"with the recorded demos and seed it finetuned to {ft_hash[:19]}..., not the recorded "
                                f"{recorded_ft_hash[:19]}... ({ft_diff.text()}); the registry is fine. Pass --accept-drift "
                                "to go on and report the drift")
        say(f"step {i + 1}: your trainer drifted from the record ({ft_diff.text()}); going on (--accept-drift)")
        ft_state = "drift-accepted"
    merge_diff = None
    if merged_hash != s.version.weight_hash:
        merge_diff = weight_diff(out.merged, registry.checkout(s.version.name, work / "recorded-merged"))
    return StepCheck(s.skill, s.version.name, s.parent.name, ft_state, ft_hash, recorded_ft_hash, ft_diff, merged_hash,
                     s.version.weight_hash, merge_diff, s.run.alpha, round(time.perf_counter() - t0, 3),
                     s.run.recipe.get("code_version", ""), code_version(),
                     runtime_changes(s.run.recipe.get("runtime"), runtime(opts.finetune.device)))


def _replayed_alpha(run: LearnRun, alpha: Optional[str], opts: LearnOptions) -> Optional[Alpha]:
    """The fixed alpha a rebuilt step merges with (None: search again): the recorded one unless
    --alpha says otherwise."""
    if alpha is None:
        return as_alpha(run.alpha)
    return None if opts.auto else opts.alpha


def _rebuild(registry, chain: list[ChainStep], start: Version, branch: str, mode: Optional[str], alpha: Optional[str],
             rehearse: Optional[float], changes: dict[str, Any], work: Path, progress: bool, say: Say,
             out: list[ReplayedStep], device: Optional[str] = None) -> None:
    """Commit the changed chain step by step onto `branch`, appending each step to `out`."""
    parent = start
    for i, s in enumerate(chain):
        step_work = work / f"step{i}"
        step_work.mkdir(parents=True)
        external = _external(s.run)
        share = _recorded_rehearse(s.run) if rehearse is None or external else rehearse
        if share and not rehearsal_sets(registry, parent, s.skill):
            say(f"step {i + 1}: nothing was learned before {s.skill} on {parent.name}, so it is finetuned without rehearsal")
            share = 0.0
        opts = _options(s.run, mode, alpha, share, device)
        same_finetune = (parent.name == s.parent.name and "mode" not in changes
                         and opts.finetune.rehearse == _recorded_rehearse(s.run))
        source = None
        parent_dir = registry.checkout(parent.name, step_work / "parent")
        if same_finetune or external:  # the recorded finetune fits: rebuild it exactly instead of retraining
            source, _ = _stored_finetuned(registry, s.run, parent_dir, step_work)
        frames, demos_ref = (None, None) if source is not None else _demos(registry, s.run, step_work, parent, opts)
        say(f"step {i + 1}: {s.skill} on {parent.name}" + (" (recorded finetune, rebuilt from its delta)" if source else ""))
        t0 = time.perf_counter()
        fixed = _replayed_alpha(s.run, alpha, opts)
        step = run_step(registry, parent, s.skill, frames, opts, step_work / "run", finetuned_source=source,
                        alpha_override=fixed, progress=progress, say=say, parent_dir=parent_dir, demos_ref=demos_ref)
        store_finetune(step, step_work / "newdelta")
        # a finetune run again rehearses what the new parent's history holds; a reused one, what it did
        kept = {k: v for k, v in s.run.recipe.items() if k != "rehearsed" or source is not None}
        recipe = {**kept, **({} if external else opts.record()), "alpha": "auto" if fixed is None else str(fixed), "parent": parent.name,
                  "replay_of": s.version.name, "replay_changes": changes, "code_version": code_version(),
                  "runtime": runtime(opts.finetune.device),
                  **({"rehearsed": step.rehearsed} if step.rehearsed else {})}
        if opts.finetune_cmd:
            mark_finetune_cmd(recipe)
        timings = {**step.timings, "total": round(time.perf_counter() - t0, 3)}
        new = commit_step(registry, step, parent=parent, skill=s.skill, how="replay", ref=branch,
                          expected_head=out[-1].new.name if out else None, recipe=recipe, delta_dir=step_work / "newdelta",
                          demo_set_id=s.run.demo_set_id, timings=timings,
                          message=f"replay {s.skill} of {s.version.name} ({', '.join(f'{k}={v}' for k, v in changes.items())})",
                          parent_dir=parent_dir)
        out.append(ReplayedStep(s.skill, s.version, new, step.alpha.to_json(), s.run.alpha, stored_rows(registry, s.version.name),
                                step.scores))
        parent = new


# ---------------------------------------------------------------------------------------- diffs


def _as_float(ckpt, name: str) -> np.ndarray:
    a = ckpt.array(name)
    if ckpt.specs[name].dtype == "BF16":  # raw bits
        a = bf16_to_float32(a)
    return a.astype(np.float64)


def weight_diff(a: Path, b: Path) -> WeightDiff:
    """Which tensors of two same-layout checkpoints differ, and the largest absolute difference."""
    from registry.checkpoint import open_checkpoint

    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        names = sorted(set(ca.specs) | set(cb.specs))
        differing, worst, max_abs = 0, None, 0.0
        for n in names:
            if n not in ca.specs or n not in cb.specs or ca.specs[n].shape != cb.specs[n].shape:
                differing += 1
                worst = worst or n
                max_abs = float("inf")
                continue
            if bytes(ca.read(n)) == bytes(cb.read(n)):
                continue
            differing += 1
            d = float(np.max(np.abs(_as_float(ca, n) - _as_float(cb, n)))) if ca.specs[n].numel else 0.0
            if d >= max_abs:
                max_abs, worst = d, n
    return WeightDiff(len(names), differing, max_abs, worst)


def ensure_reproduced(result: ReplayResult) -> None:
    """Raise INVALID_STATE naming the first step that did not reproduce (for scripts and the CLI)."""
    for c in result.checks:
        if not c.ok:
            what = c.finetune_diff.text() if c.finetune == "differs" and c.finetune_diff else (c.merge_diff.text() if c.merge_diff else "hash differs")
            stage = "finetune" if c.finetune == "differs" else "merge"
            raise invalid_state(f"replay of {c.skill} did not reproduce {c.recorded}: the {stage} differs ({what}){c.code_note}")


__all__ = ["replay", "recorded_chain", "weight_diff", "ReplayResult", "StepCheck", "ReplayedStep", "ensure_reproduced"]
