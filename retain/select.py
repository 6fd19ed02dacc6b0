"""Alpha strategies: how `learn` picks the merge coefficient(s) for a new skill.

Each strategy is a small class in an explicit name -> instance registry (as mergekit keeps its
merge methods). A strategy only sees `score(alpha) -> float`, the success rate of the merged
backbone on ONE out-of-distribution validation family, so it can be tested with any cheap
objective and knows nothing about torch, simulators or the registry.

Candidates are `retain.alphas.Alpha` values (one number for every modality, or one per modality).
Ties are broken toward keeping more of the parent: the candidate with the smaller alpha (for
per-modality alphas, the smaller sum, then the smaller language alpha) wins, because with equal
evidence the less-moved backbone risks less of what the parent already knew.

Example:
    >>> sel = get_strategy("grid").choose(lambda a: 1 - abs(a.language - 0.5), grid=[0.25, 0.5, 0.75])
    >>> str(sel.alpha), [str(p["alpha"]) for p in sel.sweep]
    ('0.5', ['0.25', '0.5', '0.75'])
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from registry.errors import invalid
from retain.alphas import REQUIRED, Alpha

ScoreFn = Callable[[Alpha], float]

DEFAULT_GRID = (0.25, 0.5, 0.75)
# Coordinate search visits the language backbone first: the paper finds its alpha matters most.
COORDINATE_ORDER = ("language", "vision", "action")


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen alpha and every candidate the strategy scored, in the order it scored them."""

    strategy: str
    alpha: Alpha
    score: float | None  # the chosen alpha's validation score (None when nothing was scored)
    sweep: list[dict[str, Any]]  # [{"alpha": Alpha, "score": s}, ...]


def tie_warning(selection: Selection, family: str) -> str | None:
    """A one-line warning when every candidate scored the same: the pick is then the tie-break, not evidence."""
    scores = {p["score"] for p in selection.sweep}
    if len(selection.sweep) < 2 or len(scores) != 1:
        return None
    return (f"warning: every alpha candidate scored {scores.pop():.2f} on {family}, so alpha {selection.alpha} "
            f"is only the tie-break toward the parent; score more episodes (-n), another --val-family, or pass --alpha")


def check_grid(grid: Sequence[float], extrapolate: bool = False) -> tuple[float, ...]:
    """Validate an alpha grid: non-empty, finite, inside [0, 1] unless extrapolating."""
    values = tuple(float(g) for g in grid)
    if not values:
        raise invalid("the alpha grid is empty; give candidates such as --alpha-grid 0.25,0.5,0.75")
    for g in values:
        if not math.isfinite(g):
            raise invalid(f"alpha grid value {g} is not a finite number; use values in [0, 1]")
        if not extrapolate and not 0.0 <= g <= 1.0:
            raise invalid(f"alpha grid value {g} is outside [0, 1]; use values in [0, 1] such as 0.25,0.5,0.75")
    return tuple(sorted(set(values)))


def parse_grid(text: str) -> tuple[float, ...]:
    """'0.25,0.5,0.75' -> (0.25, 0.5, 0.75), validated."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise invalid(f"alpha grid {text!r} does not parse; give comma-separated numbers such as 0.25,0.5,0.75") from None
    return check_grid(values)


class _Memo:
    """Scores each distinct alpha once and remembers the order of first visits."""

    def __init__(self, score: ScoreFn):
        self._score = score
        self.seen: dict[str, tuple[Alpha, float]] = {}

    def __call__(self, alpha: Alpha) -> float:
        key = alpha.key
        if key not in self.seen:
            value = float(self._score(alpha))
            if not math.isfinite(value):
                raise invalid(f"the validation score for alpha {key} is {value}; the evaluator must return a finite rate")
            self.seen[key] = (alpha, value)
        return self.seen[key][1]

    def best(self, candidates: Sequence[Alpha]) -> tuple[Alpha, float]:
        """Highest score; ties go to the candidate that keeps more of the parent."""
        scored = [(c, self(c)) for c in candidates]
        return max(scored, key=lambda cs: (cs[1], tuple(-x for x in cs[0].tie_rank())))

    def sweep(self) -> list[dict[str, Any]]:
        return [{"alpha": a, "score": s} for a, s in self.seen.values()]


class AlphaStrategy:
    """Base class: `choose(score, grid=..., alpha=...) -> Selection`."""

    name = ""
    needs_scores = True

    def choose(self, score: ScoreFn, *, grid: Sequence[float] = DEFAULT_GRID, alpha: Alpha | None = None) -> Selection:
        raise NotImplementedError

    def first_round(self, grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
        """Candidates `choose` scores whatever the scores are, so a caller may score them side by side first."""
        return []


class Fixed(AlphaStrategy):
    """The user's alpha, scored by nobody: `--alpha 0.5` or `--alpha vision=1,language=0.8,action=1`."""

    name = "fixed"
    needs_scores = False

    def choose(self, score: ScoreFn, *, grid: Sequence[float] = DEFAULT_GRID, alpha: Alpha | None = None) -> Selection:
        if alpha is None:
            raise invalid("the fixed strategy needs an alpha; pass --alpha 0.5 or --alpha vision=1,language=0.8,action=1")
        return Selection(self.name, alpha, None, [])


class _BestOfFirstRound(AlphaStrategy):
    """Score every candidate of the first round; keep the best."""

    def choose(self, score: ScoreFn, *, grid: Sequence[float] = DEFAULT_GRID, alpha: Alpha | None = None) -> Selection:
        memo = _Memo(score)
        best, value = memo.best(self.first_round(grid))
        return Selection(self.name, best, value, memo.sweep())


class Grid(_BestOfFirstRound):
    """One alpha for every modality; each grid value scored on the validation family; best kept."""

    name = "grid"

    def first_round(self, grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
        return [Alpha.uniform(g) for g in check_grid(grid)]


class LanguageOnly(_BestOfFirstRound):
    """Search the language backbone's alpha with vision = action = 1, as the paper recommends."""

    name = "language"

    def first_round(self, grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
        return [Alpha(vision=1.0, language=g, action=1.0) for g in check_grid(grid)]


class Coordinate(AlphaStrategy):
    """Coordinate ascent over the modalities (language first), starting from the best single alpha.

    Each pass tries every grid value for one modality with the others held; it stops when a full
    pass changes nothing or after `max_passes`. Costs about len(grid) * (1 + 3 * passes) scores,
    fewer with repeats remembered.
    """

    name = "coordinate"

    def __init__(self, max_passes: int = 2):
        self.max_passes = max_passes

    def choose(self, score: ScoreFn, *, grid: Sequence[float] = DEFAULT_GRID, alpha: Alpha | None = None) -> Selection:
        values = check_grid(grid)
        memo = _Memo(score)
        current, _ = memo.best(self.first_round(values))
        for _ in range(self.max_passes):
            before = current
            for m in COORDINATE_ORDER:
                current, _ = memo.best([dataclasses.replace(current, **{m: g}) for g in values])
            if current == before:
                break
        return Selection(self.name, current, memo(current), memo.sweep())

    def first_round(self, grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
        return [Alpha(**{m: g for m in REQUIRED}) for g in check_grid(grid)]


def broad_candidates(grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
    """One alpha for every modality, the language-only search, and per-modality combinations with
    the action expert whole: vision alone, and vision and language together, at each grid value.
    Lowering the action expert's alpha is left out: on the testbed it lost the new skill (plates
    0%, 10%, 45% ID at 0.25, 0.5, 0.75 against the finetune's 80%; docs/chains.md); the
    coordinate search still reaches it."""
    whole = Alpha(1.0, 1.0, 1.0)
    out: list[Alpha] = []
    for g in check_grid(grid):
        out.append(Alpha.uniform(g))
        out += [dataclasses.replace(whole, **{m: g}) for m in ("language", "vision")]
        out.append(Alpha(g, g, 1.0))
    return list({a.key: a for a in out}.values())  # first occurrences, in order


class Broad(Grid):
    """Every candidate of `broad_candidates`, scored side by side; the learn step then picks among
    them with the lineage in view (retain.keep), or the best on validation without constraints."""

    name = "broad"

    def first_round(self, grid: Sequence[float] = DEFAULT_GRID) -> list[Alpha]:
        return broad_candidates(grid)


STRATEGIES: dict[str, AlphaStrategy] = {s.name: s for s in (Fixed(), Grid(), LanguageOnly(), Coordinate(), Broad())}


def get_strategy(name: str) -> AlphaStrategy:
    """The strategy registered under `name`; unknown names list the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise invalid(f"unknown alpha strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}") from None

