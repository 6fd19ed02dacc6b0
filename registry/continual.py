"""Continual-learning views over recorded scores: pure functions, no database, no torch.

Along one ref's history (root first) each version may have learned one skill. From the scores
recorded for those versions this module builds

- the matrix of (skill, split) x versions, each cell a rate with its 95% Wilson interval;
- the continual-learning summary: per skill, success right after it was learned vs now
  (forgetting = after - now), backward transfer (the mean of now - after over every skill
  learned before the latest one; negative means forgetting, as in GEM, Lopez-Paz & Ranzato
  2017), and generalist retention (the generalist suite now vs the base).

"Success" is given for the ID split and for OOD pooled over the families measured at both
versions (summing successes and episodes, so every episode weighs the same).

Example:
    >>> matrix, summary = continual_scores(registry, "main")   # from an open Registry
    >>> history = history_along(lineage, "main")          # [HistoryStep(version, skill), ...]
    >>> matrix = score_matrix(history, scores)
    >>> summary = continual_summary(history, scores, ref="main")
    >>> print(format_matrix(matrix)); print(format_summary(summary))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional, Sequence

from registry.errors import not_found
from registry.evaluations import RULE, chosen, describe
from registry.records import GENERALIST
from registry.stats import wilson_interval



@dataclasses.dataclass(frozen=True)
class HistoryStep:
    version: str
    skill: Optional[str]  # the skill learned when this version was made (None: base, rollback target, ...)


@dataclasses.dataclass(frozen=True)
class Cell:
    successes: int
    episodes: int
    rate: float
    low: float
    high: float
    source: str = ""  # which evaluation the figure comes from (registry.evaluations.describe); "" when pooled

    @classmethod
    def of(cls, successes: int, episodes: int, source: str = "") -> "Cell":
        low, high = wilson_interval(successes, episodes)
        return cls(successes, episodes, successes / episodes if episodes else 0.0, low, high, source)


@dataclasses.dataclass(frozen=True)
class Row:
    skill: Optional[str]  # None: the generalist suite
    split: str
    cells: dict[str, Cell]  # version -> cell (only versions that have the score)

    @property
    def label(self) -> str:
        return f"{self.skill or GENERALIST} {self.split}" if self.skill else GENERALIST


@dataclasses.dataclass(frozen=True)
class ScoreMatrix:
    versions: list[str]  # root first
    learned: dict[str, str]  # version -> skill learned there
    rows: list[Row]


@dataclasses.dataclass(frozen=True)
class SkillProgress:
    skill: str
    learned_at: str
    now: str
    id_after: Optional[Cell]
    id_now: Optional[Cell]
    ood_after: Optional[Cell]  # pooled over the OOD families measured at both versions
    ood_now: Optional[Cell]
    ood_families: list[str]
    id_best: Optional[Cell] = None  # the best ID figure recorded along the history, and where
    id_best_at: Optional[str] = None
    ood_best: Optional[Cell] = None  # the best pooled OOD figure (over `ood_families`), and where
    ood_best_at: Optional[str] = None

    @property
    def id_forgetting(self) -> Optional[float]:
        return _diff(self.id_after, self.id_now)

    @property
    def ood_forgetting(self) -> Optional[float]:
        return _diff(self.ood_after, self.ood_now)


@dataclasses.dataclass(frozen=True)
class ContinualSummary:
    ref: str
    base: Optional[str]
    head: Optional[str]
    skills: list[SkillProgress]
    backward_transfer_id: Optional[float]
    backward_transfer_ood: Optional[float]
    generalist_base: Optional[Cell]
    generalist_now: Optional[Cell]
    generalist_best: Optional[Cell] = None  # the best suite figure along the history, and where
    generalist_best_at: Optional[str] = None

    @property
    def generalist_retention(self) -> Optional[float]:
        """Generalist success now as a fraction of the base's (None if either is missing or the base is 0)."""
        if self.generalist_base is None or self.generalist_now is None or self.generalist_base.rate == 0:
            return None
        return self.generalist_now.rate / self.generalist_base.rate

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["generalist_retention"] = self.generalist_retention
        for s, obj in zip(d["skills"], self.skills):
            s["id_forgetting"] = obj.id_forgetting
            s["ood_forgetting"] = obj.ood_forgetting
        return d


def _diff(after: Optional[Cell], now: Optional[Cell]) -> Optional[float]:
    if after is None or now is None:
        return None
    return after.rate - now.rate


# ---------------------------------------------------------------------------------------- history


def history_along(lineage: Any, ref: str = "main", head: Optional[str] = None) -> list[HistoryStep]:
    """The versions from the root to the ref's head (or `head`), each with the skill learned there.

    `lineage` is a `registry.records.Lineage` (versions with parents, edges with skills, refs).
    """
    start = head or lineage.refs.get(ref)
    if start is None:
        raise not_found(f"ref {ref!r} does not exist; list refs with `retain log` or `retain lineage`")
    parents = {v.name: v.parent for v in lineage.versions}
    if start not in parents:
        raise not_found(f"version {start!r} does not exist; list versions with `retain lineage`")
    skills = {e.child: e.skill for e in lineage.edges}
    chain: list[str] = []
    node: Optional[str] = start
    while node is not None and node not in chain:  # the membership test guards against a cycle
        chain.append(node)
        node = parents.get(node)
    return [HistoryStep(v, skills.get(v)) for v in reversed(chain)]


def continual_scores(registry: Any, ref: str = "main") -> tuple["ScoreMatrix", "ContinualSummary"]:
    """The matrix and summary along `ref` of an open registry.api.Registry (two queries per version)."""
    history = history_along(registry.lineage(), ref)
    scores = [s for step in history for s in registry.scores(step.version)]
    return score_matrix(history, scores), continual_summary(history, scores, ref=ref)


# ---------------------------------------------------------------------------------------- matrix


def _split_order(split: str) -> tuple[int, str]:
    return (0 if split == "id" else 1 if split.startswith("ood:") else 2, split)


def score_matrix(history: Sequence[HistoryStep], scores: Iterable[Any]) -> ScoreMatrix:
    """Rows (skill, split) x the history's versions; skills in the order they were learned."""
    versions = [h.version for h in history]
    wanted = set(versions)
    latest = {(skill, split, version): s for (version, skill, split), s in chosen(scores).items() if version in wanted}
    learned = {h.version: h.skill for h in history if h.skill}
    order = {skill: i for i, skill in enumerate(dict.fromkeys(learned.values()))}
    grouped: dict[tuple[Optional[str], str], dict[str, Cell]] = {}
    for (skill, split, version), s in latest.items():
        grouped.setdefault((skill, split), {})[version] = Cell.of(int(s.successes), int(s.episodes), describe(s))
    keys = sorted(
        grouped,
        key=lambda k: (k[0] is None, order.get(k[0], len(order)) if k[0] else 0, k[0] or "", _split_order(k[1])),
    )
    return ScoreMatrix(versions, learned, [Row(k[0], k[1], grouped[k]) for k in keys])


# ---------------------------------------------------------------------------------------- summary


def _pooled(row_cells: dict[str, dict[str, Cell]], version: str, families: list[str]) -> Optional[Cell]:
    if not families or any(version not in row_cells[f] for f in families):
        return None
    s = sum(row_cells[f][version].successes for f in families)
    n = sum(row_cells[f][version].episodes for f in families)
    return Cell.of(s, n) if n else None


def _best(cells: dict[str, Cell], versions: Sequence[str]) -> tuple[Optional[str], Optional[Cell]]:
    """(version, cell) of the highest rate along `versions` (ties: the earliest)."""
    best: tuple[Optional[str], Optional[Cell]] = (None, None)
    for v in versions:
        c = cells.get(v)
        if c is not None and (best[1] is None or c.rate > best[1].rate):
            best = (v, c)
    return best


def continual_summary(history: Sequence[HistoryStep], scores: Iterable[Any], ref: str = "main") -> ContinualSummary:
    """Forgetting per skill, backward transfer, and generalist retention along `history`."""
    matrix = score_matrix(history, list(scores))
    if not history:
        return ContinualSummary(ref, None, None, [], None, None, None, None)
    base, head = history[0].version, history[-1].version
    by_skill: dict[str, dict[str, dict[str, Cell]]] = {}
    generalist: dict[str, Cell] = {}
    for row in matrix.rows:
        if row.skill is None:
            if row.split == GENERALIST:
                generalist = row.cells
            continue
        by_skill.setdefault(row.skill, {})[row.split] = row.cells
    # A skill learned twice counts from its latest learning; skills are ordered by that moment.
    last_learned: dict[str, tuple[int, str]] = {h.skill: (i, h.version) for i, h in enumerate(history) if h.skill}
    progress = []
    for skill, (_, learned_at) in sorted(last_learned.items(), key=lambda kv: kv[1][0]):
        cells = by_skill.get(skill, {})
        id_cells = cells.get("id", {})
        families = sorted(f for f, c in cells.items() if f.startswith("ood:") and learned_at in c and head in c)
        ood_cells = {v: c for v in matrix.versions if (c := _pooled(cells, v, families)) is not None}
        id_best, ood_best = _best(id_cells, matrix.versions), _best(ood_cells, matrix.versions)
        progress.append(
            SkillProgress(
                skill, learned_at, head, id_cells.get(learned_at), id_cells.get(head),
                _pooled(cells, learned_at, families), _pooled(cells, head, families), families,
                id_best[1], id_best[0], ood_best[1], ood_best[0],
            )
        )
    # Backward transfer covers the skills learned before the latest one: the latest has had no
    # later learning that could help or hurt it.
    earlier = progress[:-1]
    return ContinualSummary(
        ref, base, head, progress,
        _mean([-(p.id_forgetting) for p in earlier if p.id_forgetting is not None]),
        _mean([-(p.ood_forgetting) for p in earlier if p.ood_forgetting is not None]),
        generalist.get(base), generalist.get(head), *reversed(_best(generalist, matrix.versions)),
    )


def _mean(xs: list[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------------------------------- output


def report_dict(matrix: ScoreMatrix, summary: ContinualSummary) -> dict[str, Any]:
    """Both views as plain JSON-ready data (what `scores --ref REF --json` prints)."""
    rows = [{"skill": r.skill, "split": r.split, "cells": {v: dataclasses.asdict(c) for v, c in r.cells.items()}} for r in matrix.rows]
    return {"ref": summary.ref, "versions": matrix.versions, "learned": matrix.learned, "rows": rows, "summary": summary.to_dict()}


def report_text(matrix: ScoreMatrix, summary: ContinualSummary) -> str:
    return format_matrix(matrix) + "\n\n" + format_summary(summary) + "\n\n" + format_sources(matrix)


def format_sources(matrix: ScoreMatrix) -> str:
    """Which evaluation the figures of each version come from (`retain scores VERSION --all` lists them all)."""
    lines = [f"figures from ({RULE}; every evaluation: `retain scores VERSION --all`):"]
    for v in matrix.versions:
        count: dict[str, int] = {}
        for r in matrix.rows:
            c = r.cells.get(v)
            if c is not None and c.source:
                count[c.source] = count.get(c.source, 0) + 1
        for source, n in count.items():
            lines.append(f"  {v}: {n} figure{'s' if n != 1 else ''} from {source}")
    return "\n".join(lines)



def _pct(c: Optional[Cell]) -> str:
    return "-" if c is None else f"{100 * c.rate:.0f}% [{100 * c.low:.0f}-{100 * c.high:.0f}]"


def _pts(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.1f} pts"


def format_matrix(matrix: ScoreMatrix) -> str:
    """A plain-text table: one row per (skill, split), one column per version (rate [95% CI])."""
    if not matrix.rows:
        return "no scores recorded along this history yet; run `retain eval VERSION` or `retain learn TASK`"
    heads = [v + (f" (+{matrix.learned[v]})" if v in matrix.learned else "") for v in matrix.versions]
    labels = [r.label for r in matrix.rows]
    body = [[_pct(r.cells.get(v)) for v in matrix.versions] for r in matrix.rows]
    w0 = max(len("skill split"), *(len(s) for s in labels))
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(heads)]
    lines = ["  ".join(["skill split".ljust(w0)] + [h.rjust(w) for h, w in zip(heads, widths)])]
    for label, row in zip(labels, body):
        lines.append("  ".join([label.ljust(w0)] + [c.rjust(w) for c, w in zip(row, widths)]))
    return "\n".join(lines)


def format_summary(summary: ContinualSummary) -> str:
    """Forgetting per skill, backward transfer and generalist retention, as short lines."""
    lines = [f"continual learning along {summary.ref} ({summary.base} -> {summary.head})"]
    if not summary.skills:
        lines.append("  no skill learned along this history yet")
    for p in summary.skills:
        lines.append(
            f"  {p.skill} (learned at {p.learned_at}): ID {_pct(p.id_after)} -> {_pct(p.id_now)} "
            f"(forgetting {_pts(p.id_forgetting)}); OOD {_pct(p.ood_after)} -> {_pct(p.ood_now)} "
            f"(forgetting {_pts(p.ood_forgetting)})"
        )
    lines.append(f"  backward transfer: ID {_pts(summary.backward_transfer_id)}, OOD {_pts(summary.backward_transfer_ood)}")
    ret = summary.generalist_retention
    lines.append(
        f"  generalist: base {_pct(summary.generalist_base)} -> now {_pct(summary.generalist_now)}"
        + (f" (retention {100 * ret:.0f}%)" if ret is not None else "")
    )
    kept = [(f"{p.skill} ID", p.id_best, p.id_best_at, p.id_now) for p in summary.skills]
    kept += [(f"{p.skill} OOD", p.ood_best, p.ood_best_at, p.ood_now) for p in summary.skills]
    kept.append((GENERALIST, summary.generalist_best, summary.generalist_best_at, summary.generalist_now))
    kept = [k for k in kept if k[1] is not None and k[3] is not None]
    if kept:
        lines.append(f"  kept against the best recorded figure along {summary.ref}:")
        for label, best, at, now in kept:
            share = f"kept {100 * now.rate / best.rate:.0f}%, " if best.rate > 0 else ""
            lines.append(f"    {label}: best {_pct(best)} at {at} -> now {_pct(now)} ({share}{_pts(now.rate - best.rate)})")
    return "\n".join(lines)
