"""Scoring for `learn` and `replay`: simulator rollouts of checkpoints, or the user's evaluator.

A `Scorer` evaluates (skill, split) pairs of one checkpoint with paired episodes (the same
evaluation seed for every version and alpha), and scores alpha candidates on ONE validation
family: a simulator OOD family, or whatever `--eval-cmd` prints.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from registry.records import NewScore
from retain.finetune import policy_of

GENERALIST = "generalist"
# Rollouts run small batches: one thread is faster than two (and immune to a busy machine), and a
# fixed count keeps scores reproducible.
EVAL_THREADS = 1
Job = tuple[Optional[str], str]  # (skill, or None for the generalist suite; split)


@dataclasses.dataclass(frozen=True)
class ScoreRow:
    """One evaluation of one model: a skill (None: generalist suite) on one split."""

    skill: Optional[str]
    split: str
    successes: int
    episodes: int
    rate: float
    low: float
    high: float
    evaluator: str

    def to_new_score(self) -> NewScore:
        return NewScore(self.skill, self.split, self.successes, self.episodes, self.evaluator)

    def brief(self) -> dict[str, Any]:
        return {"successes": self.successes, "episodes": self.episodes, "rate": self.rate, "low": self.low, "high": self.high}


def sim_skills() -> list[str]:
    from retain import sim

    return list(sim.SKILLS)


def ood_families() -> list[str]:
    from retain import sim

    return [s for s in sim.SETTINGS if s.startswith("ood:")]


class Scorer:
    """Evaluates checkpoints: in the simulator (built-in policy) and/or with the user's command."""

    def __init__(self, config: Mapping[str, Any], *, episodes: int, seed: int, validation_family: str,
                 eval_cmd: Optional[str] = None, progress: bool = False):
        self.episodes, self.seed, self.validation_family, self.eval_cmd = episodes, seed, validation_family, eval_cmd
        self.progress = progress
        self.adapter = self.policy_config = None
        if (config or {}).get("policy"):
            self.adapter, self.policy_config = policy_of(config)
        self.sim = self.adapter is not None

    def load(self, checkpoint: Path):
        return self.adapter.load(checkpoint, self.policy_config)

    def validation(self, checkpoint: Path, skill: str) -> ScoreRow:
        """The score alpha is chosen on: the user's command, else the simulator's validation family."""
        if self.eval_cmd:
            return external_score(self.eval_cmd, checkpoint, skill, self.validation_family)
        return self.evaluate(checkpoint, [(skill, self.validation_family)], bar=False)[0]

    def evaluate(self, checkpoint: Path | Any, jobs: Sequence[Job], bar: bool = True, desc: str = "evaluate") -> list[ScoreRow]:
        """Simulator scores for (skill or None for generalist, split) jobs, with paired episodes."""
        from retain.evaluate import EVALUATOR, evaluate

        if not jobs:
            return []
        model = self.load(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
        rows = []
        for skill, split in _bar(jobs, desc, self.progress and bar):
            r = evaluate(model, self.adapter, skill or GENERALIST, split, self.episodes, self.seed, threads=EVAL_THREADS)
            rows.append(ScoreRow(skill, split, r.successes, r.episodes, r.rate, r.low, r.high, EVALUATOR))
        return rows


def external_score(template: str, checkpoint: Path, skill: str, family: str) -> ScoreRow:
    from registry.stats import wilson_interval
    from retain.external_eval import run_eval_cmd

    res = run_eval_cmd(template, checkpoint)
    if res.episodes is None:
        return ScoreRow(skill, family, 0, 0, res.rate, res.rate, res.rate, "external")  # a rate alone: not recorded as a score
    low, high = wilson_interval(res.successes, res.episodes)
    return ScoreRow(skill, family, res.successes, res.episodes, res.rate, low, high, "external")


def _bar(items: Sequence, desc: str, show: bool) -> Iterable:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, leave=False)


def evaluation_jobs(skills: Sequence[str], with_generalist: bool, known: Sequence[str]) -> list[Job]:
    """ID + every OOD family for each simulator skill, then the generalist suite."""
    jobs: list[Job] = []
    for s in skills:
        if s in known:
            jobs += [(s, "id")] + [(s, f) for f in ood_families()]
    if with_generalist:
        jobs.append((None, GENERALIST))
    return jobs
