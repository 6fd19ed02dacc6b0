"""Which recorded evaluation a score figure shows: the one with the most episodes.

Every evaluation is kept (evaluator, seed, episodes, date: one `scores` row each); `learn`, `eval`
and `replay` only ever add. A figure (version, skill, split) shows ONE of them:

- the evaluation with the most episodes, since its interval is the narrowest;
- on a tie in episodes, the earliest, so a figure changes only when strictly more evidence arrives
  (a re-evaluation of the same size does not silently replace what `learn` measured and chose on).

Why not pool compatible evaluations? Evaluations that share a seed replay the same scenes (paired
episodes), so summing them counts one episode several times; pooling is only sound across
different seeds of the same evaluator, and then the figure would come from no single run that one
command reproduces. `retain scores VERSION --all` lists every evaluation; each figure names its own
(`describe`), so a user can pool by hand where it is sound.

Example:
    >>> from registry.records import Score
    >>> shown_scores([learn_50_episodes, eval_3_episodes])  # -> [learn_50_episodes]
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

Key = tuple[str, Optional[str], str]  # (version, skill or None for the generalist suite, split)

RULE = "the evaluation with the most episodes (ties: the earliest)"


def figure_key(score: Any) -> Key:
    return (score.version, score.skill, score.split)


def _rank(score: Any) -> tuple:
    # More episodes first; then the earlier record (created_at, then row id) wins a tie.
    at = getattr(score, "created_at", None)
    return (-int(score.episodes), at is None, at.timestamp() if at is not None else 0.0, getattr(score, "id", None) or 0)


def chosen(scores: Iterable[Any]) -> dict[Key, Any]:
    """(version, skill, split) -> the evaluation shown for it."""
    out: dict[Key, Any] = {}
    for s in scores:
        key = figure_key(s)
        if key not in out or _rank(s) < _rank(out[key]):
            out[key] = s
    return out


def shown_scores(scores: Iterable[Any]) -> list[Any]:
    """The shown evaluation of each figure, in the order the figures first appear."""
    scores = list(scores)
    pick = chosen(scores)
    ids = {id(s) for s in pick.values()}
    return [s for s in scores if id(s) in ids]


def describe(score: Any) -> str:
    """Which evaluation a figure comes from, in words: 'sim-v1, seed 12345, 50 episodes, 2026-12-04 16:10 UTC'."""
    seed = getattr(score, "seed", None)
    at = getattr(score, "created_at", None)
    parts = [getattr(score, "evaluator", None) or "evaluator not recorded", f"seed {seed}" if seed is not None else "seed not recorded", f"{score.episodes} episodes"]
    if at is not None:
        parts.append(at.strftime("%Y-%m-%d %H:%M UTC"))
    return ", ".join(parts)
