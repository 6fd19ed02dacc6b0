"""Scoring for `learn` and `replay`: simulator rollouts of checkpoints, or the user's evaluator.

A `Scorer` evaluates (skill, split) pairs of one checkpoint with paired episodes (the same
evaluation seed for every version and alpha), and scores alpha candidates on ONE validation
family: a simulator OOD family, or whatever `--eval-cmd` prints.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from registry.records import GENERALIST, NewScore, Score
from retain.eval_pool import EvalJob, EvalPool
from retain.evaluate import ood_settings
from retain.policies import policy_of
from retain.progress import progress_bar

SkillSplit = tuple[Optional[str], str]  # (skill, or None for the generalist suite; split)


@dataclasses.dataclass(frozen=True)
class SkillScore:
    """One evaluation of one model: a skill (None: generalist suite) on one split."""

    skill: Optional[str]
    split: str
    successes: int
    episodes: int
    rate: float
    low: float
    high: float
    evaluator: str
    seed: Optional[int] = None  # the evaluation seed (None: the user's evaluator, or not recorded)

    @classmethod
    def from_stored(cls, score: Score) -> "SkillScore":
        """A score as the registry holds it, as a row."""
        return cls(score.skill, score.split, score.successes, score.episodes, score.rate, score.ci_low, score.ci_high,
                   score.evaluator, score.seed)

    def to_new_score(self) -> NewScore:
        return NewScore(self.skill, self.split, self.successes, self.episodes, self.evaluator, self.seed)

    def brief(self) -> dict[str, Any]:
        return {"successes": self.successes, "episodes": self.episodes, "rate": self.rate, "low": self.low, "high": self.high}


def stored_rows(registry, version: str) -> list[SkillScore]:
    """The scores `version` has recorded, as rows."""
    return [SkillScore.from_stored(s) for s in registry.scores(version)]


class Scorer:
    """Evaluates checkpoints: in the simulator (built-in policy) and/or with the user's command.

    Simulator jobs run in an `EvalPool` (worker processes, one per core); `close()` stops it.
    """

    def __init__(self, config: Mapping[str, Any], *, episodes: int, seed: int, validation_family: str,
                 eval_cmd: Optional[str] = None, progress: bool = False, workers: Optional[int] = None,
                 model_bytes: int = 0):
        self.episodes, self.seed, self.validation_family, self.eval_cmd = episodes, seed, validation_family, eval_cmd
        self.progress = progress
        self.config = dict(config or {})
        self.adapter = self.policy_config = None
        if self.config.get("policy"):
            self.adapter, self.policy_config = policy_of(self.config)
        self.sim = self.adapter is not None
        self.pool = EvalPool(workers, model_bytes) if self.sim else None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(kill=exc_type is not None)

    def start(self) -> None:
        """Start the evaluation workers in the background (they import torch while the caller trains)."""
        if self.pool is not None:
            self.pool.start()

    def close(self, kill: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(kill=kill)

    def validation(self, checkpoint: Path, skill: str) -> SkillScore:
        """The score alpha is chosen on: the user's command, else the simulator's validation family."""
        if self.eval_cmd:
            return external_score(self.eval_cmd, checkpoint, skill, self.validation_family)
        return self.evaluate(checkpoint, [(skill, self.validation_family)], bar=False)[0]

    def validations(self, checkpoints: Sequence[Path], skill: str) -> list[SkillScore]:
        """`validation` of several checkpoints; simulator ones side by side in the pool."""
        if self.eval_cmd:  # the user's evaluator may hold a GPU: one at a time
            return [self.validation(c, skill) for c in checkpoints]
        rows = self.evaluate_many([(c, [(skill, self.validation_family)]) for c in checkpoints], bar=False)
        return [r[0] for r in rows]

    def evaluate(self, checkpoint: Path, jobs: Sequence[SkillSplit], bar: bool = True, desc: str = "evaluate") -> list[SkillScore]:
        """Simulator scores for (skill or None for generalist, split) jobs, with paired episodes."""
        return self.evaluate_many([(checkpoint, jobs)], bar=bar, desc=desc)[0]

    def evaluate_many(self, requests: Sequence[tuple[Path, Sequence[SkillSplit]]], bar: bool = True,
                      desc: str = "evaluate", episodes: Optional[int] = None) -> list[list[SkillScore]]:
        """`evaluate` for several checkpoints at once, every job in one queue so the workers stay busy
        (`episodes`: other than the scorer's, e.g. the lineage checks' smaller count)."""
        from retain.evaluate import EVALUATOR

        flat = [(i, skill, split) for i, (_, jobs) in enumerate(requests) for skill, split in jobs]
        work = [EvalJob(self.config, str(requests[i][0]), skill or GENERALIST, split, episodes or self.episodes, self.seed)
                for i, skill, split in flat]
        progress = progress_bar(len(work), desc, unit="evaluations", show=self.progress and bar and bool(work))
        try:
            results = self.pool.run(work, done=progress.update if progress else None) if work else []
        finally:
            if progress:
                progress.close()
        out: list[list[SkillScore]] = [[] for _ in requests]
        for (i, skill, split), r in zip(flat, results):
            out[i].append(SkillScore(skill, split, r.successes, r.episodes, r.rate, r.low, r.high, EVALUATOR, self.seed))
        return out


def external_score(template: str, checkpoint: Path, skill: str, family: str) -> SkillScore:
    from registry.stats import wilson_interval
    from retain.external_eval import run_eval_cmd

    res = run_eval_cmd(template, checkpoint)
    if res.episodes is None:
        return SkillScore(skill, family, 0, 0, res.rate, res.rate, res.rate, "external")  # a rate alone: not recorded as a score
    low, high = wilson_interval(res.successes, res.episodes)
    return SkillScore(skill, family, res.successes, res.episodes, res.rate, low, high, "external")


def evaluation_jobs(skills: Sequence[str], with_generalist: bool, known: Sequence[str]) -> list[SkillSplit]:
    """ID + every OOD family for each simulator skill, then the generalist suite."""
    jobs: list[SkillSplit] = []
    for s in skills:
        if s in known:
            jobs += [(s, "id")] + [(s, f) for f in ood_settings()]
    if with_generalist:
        jobs.append((None, GENERALIST))
    return jobs
