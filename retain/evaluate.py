"""Closed-loop evaluation in the built-in simulator, batched across episodes.

All episodes of one evaluation run in one `sim.TabletopBatch`; every `execute` steps the policy
predicts the next action chunk for all live episodes in ONE forward pass. Episode `i` of an
evaluation with seed `s` is the same scene whichever policy is evaluated, so two policies (or
two merge alphas) evaluated with the same seed are compared on paired episodes.

Splits: "id" (the narrow setting demos come from), "ood:<family>" for each OOD family the
simulator defines, and "generalist" (the pretraining tasks under broad variation).

Example:
    >>> r = evaluate(model, adapter, "plates", "ood:position", episodes=200, seed=0)
    >>> r.rate, (r.low, r.high)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from registry.errors import invalid
from registry.records import GENERALIST
from registry.stats import wilson_interval
from retain.policies.adapter import PolicyAdapter

EVALUATOR = "retain-sim-v1"  # bump when evaluation changes in a way that makes old scores incomparable


@dataclasses.dataclass(frozen=True)
class EvalResult:
    task: str  # a skill, or "generalist" for the pretraining-task suite
    setting: str  # "id", "ood:<family>" or "generalist"
    successes: int
    episodes: int
    rate: float
    low: float  # Wilson 95% interval
    high: float
    outcomes: tuple[bool, ...] = dataclasses.field(default=(), repr=False)  # per episode, for paired comparisons


def sim_skills() -> list[str]:
    """The skills the simulator can score."""
    from retain import sim

    return list(sim.SKILLS)


def ood_settings() -> list[str]:
    """The default OOD pool (opt-in families such as ood:paraphrase are scored only when named)."""
    from retain import sim

    return list(sim.OOD_FAMILIES)


def settings_for(split: str, skill: str | None) -> list[str]:
    """The evaluation settings one `--split` value stands for ("id", "ood", "generalist", "all" or
    one "ood:<family>"); without a skill only the generalist suite exists."""
    ood = ood_settings()
    if split == "all":
        return (["id", *ood] if skill else []) + [GENERALIST]
    if split == GENERALIST:
        return [GENERALIST]
    from retain import sim

    named = [s for s in sim.SETTINGS if s.startswith("ood:")]  # opt-in families too
    if split not in ("id", "ood", *named):
        raise invalid(f"unknown split {split!r}; use id, ood, generalist, all or one of {', '.join(named)}")
    if skill is None:
        raise invalid(f"split {split!r} needs a skill; pass --skill (one of the skills) or use --split generalist")
    return ood if split == "ood" else [split]


def check_task(task: str) -> None:
    from retain import sim

    if task not in sim.SKILLS and task not in sim.PRETRAIN_TASKS:
        raise invalid(f"unknown skill {task!r}; known skills: {', '.join(sim.SKILLS)}")


def evaluate(
    model,
    adapter: PolicyAdapter,
    task: str | Sequence[str],
    setting: str,
    episodes: int,
    seed: int,
    *,
    threads: int | None = None,
) -> EvalResult:
    """Success of `model` on `episodes` closed-loop episodes of `task` (a skill, a pretraining
    task, a list of tasks cycled over episodes, or "generalist" for all pretraining tasks)."""
    import torch

    from retain import sim

    if episodes < 1:
        raise invalid(f"episodes must be at least 1, got {episodes}")
    if setting not in sim.SETTINGS:
        raise invalid(f"unknown setting {setting!r}; known settings: {', '.join(sim.SETTINGS)}")
    if isinstance(task, str):
        label = task
        names = list(sim.PRETRAIN_TASKS) if task == GENERALIST else [task]
    else:
        names, label = list(task), ",".join(task)
    for name in names:
        check_task(name)
    tasks = [names[i % len(names)] for i in range(episodes)]
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        successes = _rollout(model, adapter, tasks, setting, seed)
    finally:
        torch.set_num_threads(old_threads)
    k = int(successes.sum())
    low, high = wilson_interval(k, episodes)
    return EvalResult(label, setting, k, episodes, k / episodes, low, high, tuple(bool(x) for x in successes))


def _rollout(model, adapter: PolicyAdapter, tasks: list[str], setting: str, seed: int) -> np.ndarray:
    """Run every episode to its end; returns success (n,) bool."""
    from retain import sim

    # render what the policy was built to see; adapters without a config get the default size
    image_size = getattr(getattr(model, "cfg", None), "image_size", None)
    batch = sim.TabletopBatch(tasks, setting, len(tasks), seed, image_size=image_size)
    obs = batch.reset()
    instructions = list(batch.instructions)
    n = len(tasks)
    live = np.ones(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    execute = adapter.execute_steps(model)
    horizon = max(sim.max_steps(t) for t in set(tasks))
    chunk = np.zeros((n, execute, sim.ACTION_DIM), dtype=np.float32)
    for t in range(horizon):
        if not live.any():
            break
        k = t % execute
        if k == 0:  # one forward pass for every live episode
            idx = np.flatnonzero(live)
            sub = {"image": obs["image"][idx], "state": obs["state"][idx]}
            chunk[idx] = adapter.act_chunk(model, sub, [instructions[i] for i in idx])
        actions = np.where(live[:, None], chunk[:, k], 0.0).astype(np.float32)
        obs, succ, done = batch.step(actions)
        success |= np.asarray(succ, dtype=bool) & live
        live &= ~np.asarray(done, dtype=bool)
    return success


def evaluator_name(device: str = "cpu") -> str:
    """What a score records as its evaluator: the simulator's version, and a GPU when the policy ran
    on one (its float sums differ from the CPU's, so an episode on the edge can end otherwise)."""
    return EVALUATOR if device.split(":", 1)[0] == "cpu" else f"{EVALUATOR}@cuda"


def to_scores(results: Sequence[EvalResult], skill: str | None, seed: int | None = None, device: str = "cpu"):
    """Registry NewScore rows for results (skill None for the generalist suite)."""
    from registry.records import NewScore

    return [
        NewScore(skill=None if r.setting == GENERALIST else skill, split=r.setting, successes=r.successes, episodes=r.episodes,
                 evaluator=evaluator_name(device), seed=seed)
        for r in results
    ]


def evaluate_splits(model, adapter: PolicyAdapter, skill: str | None, settings: Sequence[str], episodes: int, seed: int) -> list[EvalResult]:
    """One EvalResult per setting: the skill under "id"/"ood:*", the pretraining tasks under "generalist"."""
    if skill is not None:
        check_task(skill)
    return [evaluate(model, adapter, GENERALIST if s == GENERALIST else skill, s, episodes, seed) for s in settings]
