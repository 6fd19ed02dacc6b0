"""What a learn must keep of its lineage: the `--keep` language and the rule that picks a candidate.

    --keep plates>=0.7          plates' success on its ID split stays at 0.7 or more
    --keep generalist>=0.8x     the generalist suite keeps at least 0.8 of the parent's score
    --keep all>=0.8x            every earlier skill of the lineage and the suite keep 0.8 of the parent's
    --keep new>=0.8x            the skill being learned reaches 0.8 of the plain finetune's ID success
    --keep none                 no constraint (the behaviour before constraints existed)

A target is an earlier skill of the lineage, `generalist` (the suite), `all` (both) or `new` (the
skill being learned, on its ID split; an `x` threshold is then a share of the plain finetune's
score, not the parent's). A threshold is a number in [0, 1]: a success rate, or with a trailing `x`
a share of the reference's own score on the same paired episodes. Unless named, `new>=0.8x` joins
every set of constraints: on the built-in testbed the validation family alone cannot tell a merge
that learned the skill from one that did not (docs/chains.md), and keeping the lineage by not
learning is no choice. A named target overrides what `all` asks of it (`--keep all>=0.8x --keep
plates>=0.5` loosens plates alone); naming one target twice with different thresholds, or `none`
beside a constraint, contradicts itself and is refused.

The rule (`choose`): among the candidates that learn the new skill (validation success above the
parent's, which every candidate is compared with), the best validation success whose every check
holds; ties go to the candidate keeping the larger worst share, then to the one that moves the
backbone least. When none holds, the best trade-off is the learning candidate whose worst shortfall
is smallest (ties: better validation), among those meeting the new skill's own check (`new`) when
any does: the default constraint (`DEFAULT_KEEP`, soft) commits it and
says so; constraints the user gave (hard) stop with exit 5 naming it (`refusal`), unless `force`.

Pure: no torch, no simulator, no registry. Example:
    >>> spec = parse_keep(["plates>=0.7", "generalist>=0.8x"])
    >>> checks = spec.resolve(earlier=["plates"], checkable=["plates"])
    >>> [c.text for c in checks]
    ['plates>=0.7', 'generalist>=0.8x']
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional, Sequence

from registry.errors import RegistryError, invalid, invalid_state

GENERALIST = "generalist"
ALL = "all"
NONE = "none"
NEW = "new"
DEFAULT_KEEP = "all>=0.8x"  # see docs/chains.md for the measurements behind the shares
DEFAULT_NEW = "new>=0.8x"
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(>=|=>|<=|=<|>|<|==|=)\s*(\S*)\s*$")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One `--keep` term: target >= threshold (relative: threshold x the parent's score)."""

    target: str  # a skill, "generalist" or "all"
    threshold: float
    relative: bool

    @property
    def text(self) -> str:
        return f"{self.target}>={self.threshold:g}{'x' if self.relative else ''}"

    def needed(self, parent: float) -> float:
        return self.threshold * parent if self.relative else self.threshold


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint applied to one measured target: a skill's ID success, or the suite (skill None)."""

    skill: Optional[str]
    constraint: Constraint
    new: bool = False  # the skill being learned: measured against the plain finetune, not the parent

    @property
    def label(self) -> str:
        return f"{self.skill} (new)" if self.new else self.skill or GENERALIST

    @property
    def text(self) -> str:
        return self.constraint.text if self.new else dataclasses.replace(self.constraint, target=self.label).text


@dataclasses.dataclass(frozen=True)
class KeepSpec:
    constraints: tuple[Constraint, ...]
    soft: bool  # the default: commits the best trade-off when nothing meets it, rather than stop

    @property
    def text(self) -> str:
        return " ".join(c.text for c in self.constraints) or NONE

    def resolve(self, earlier: Sequence[str], checkable: Sequence[str], new: Optional[str] = None) -> list[Check]:
        """The checks for a learn of `new` whose parent learned `earlier` (root first); `checkable`:
        the skills the evaluator can score. A named skill outside the lineage, or one that cannot be
        scored, is refused; `all` covers the checkable ones (and the suite); `new` comes last."""
        named = {c.target: c for c in self.constraints if c.target != ALL}
        for target in named:
            if target in (GENERALIST, NEW):
                continue
            if target not in earlier:
                have = ", ".join(earlier) or "none yet"
                raise invalid(f"--keep names {target!r}, which is not a skill of this lineage (earlier skills: {have}); "
                              f"name one of them, {GENERALIST} or {ALL}")
            if target not in checkable:
                raise invalid(f"--keep names {target!r}, which the simulator cannot score; drop that constraint")
        every = next((c for c in self.constraints if c.target == ALL), None)
        checks: list[Check] = []
        for skill in earlier:
            c = named.get(skill) or (every if skill in checkable else None)
            if c is not None:
                checks.append(Check(skill, c))
        c = named.get(GENERALIST) or every
        if c is not None:
            checks.append(Check(None, c))
        c = named.get(NEW)
        if c is not None and new is not None and new in checkable:
            checks.append(Check(new, c, new=True))
        return checks


def _threshold(text: str, spec: str) -> tuple[float, bool]:
    body, relative = (text[:-1], True) if text.lower().endswith("x") else (text, False)
    try:
        value = float(body)
    except ValueError:
        raise invalid(f"--keep {spec!r}: threshold {text!r} is not a number; write e.g. plates>=0.7 or generalist>=0.8x") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        what = "share of the parent's score" if relative else "success rate"
        raise invalid(f"--keep {spec!r}: the {what} {body} is outside [0, 1]; use e.g. {'0.8x' if relative else '0.7'}")
    return value, relative


def parse_constraint(spec: str) -> Constraint:
    m = _SPEC.match(spec or "")
    if not m:
        raise invalid(f"--keep {spec!r} is malformed; write TARGET>=THRESHOLD, e.g. plates>=0.7, generalist>=0.8x or all>=0.8x")
    target, op, value = m.groups()
    if op not in (">=", "=>"):
        raise invalid(f"--keep {spec!r}: only '>=' is supported (a lower bound on what is kept); write {target}>={value or '0.8x'}")
    if not value:
        raise invalid(f"--keep {spec!r} has no threshold; write e.g. {target}>=0.7 or {target}>=0.8x")
    threshold, relative = _threshold(value, spec)
    return Constraint(target, threshold, relative)


def parse_keep(specs: Sequence[str], default: str = DEFAULT_KEEP) -> KeepSpec:
    """`--keep` values (repeatable, each may hold several terms separated by commas) -> KeepSpec.
    No value: the soft default. `none`: no constraint. Contradictions are refused."""
    terms = [t.strip() for s in specs for t in str(s).split(",")]
    if any(not t for t in terms):
        raise invalid("--keep has an empty term; write e.g. --keep plates>=0.7,generalist>=0.8x")
    if not terms:
        return KeepSpec(parse_keep([default]).constraints, soft=True)  # with DEFAULT_NEW
    if NONE in (t.lower() for t in terms):
        if len(terms) > 1:
            raise invalid(f"--keep none contradicts --keep {', '.join(t for t in terms if t.lower() != NONE)}; give one or the other")
        return KeepSpec((), soft=False)
    out: dict[str, Constraint] = {}
    for t in terms:
        c = parse_constraint(t)
        old = out.get(c.target)
        if old is not None and old != c:
            raise invalid(f"--keep {old.text} and --keep {c.text} contradict each other; give {c.target} one threshold")
        out[c.target] = c
    if NEW not in out:
        out[NEW] = parse_constraint(DEFAULT_NEW)
    return KeepSpec(tuple(out.values()), soft=False)


# ---------------------------------------------------------------------------------------- the rule


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A scored candidate: its alpha (JSON form), validation success, and what it kept ({label: rate},
    labels being skills and "generalist"); `kept` is empty for a candidate not checked."""

    key: str
    alpha: Any
    validation: float
    kept: dict[str, float] = dataclasses.field(default_factory=dict)
    moved: float = 0.0  # how far it moves the backbone (sum of alphas): the last tie-break


@dataclasses.dataclass(frozen=True)
class Verdict:
    check: Check
    parent: float
    candidate: Optional[float]
    needed: float

    @property
    def ok(self) -> bool:
        return self.candidate is not None and self.candidate >= self.needed - 1e-12

    @property
    def shortfall(self) -> float:
        return math.inf if self.candidate is None else max(0.0, self.needed - self.candidate)

    @property
    def share(self) -> float:
        if self.candidate is None:
            return 0.0
        return 1.0 if self.parent <= 0 else self.candidate / self.parent


def verdicts(checks: Sequence[Check], parent: Candidate, cand: Candidate, finetuned: Optional[Candidate] = None) -> list[Verdict]:
    """Each check of `cand`; a `new` check measures against `finetuned` (the plain finetune), the rest against the parent."""
    out = []
    for c in checks:
        ref = finetuned if c.new and finetuned is not None else parent
        out.append(Verdict(c, parent.kept.get(c.label, 0.0), cand.kept.get(c.label), c.constraint.needed(ref.kept.get(c.label, 0.0))))
    return out


def learns(cand: Candidate, parent: Candidate) -> bool:
    return cand.validation > parent.validation


@dataclasses.dataclass(frozen=True)
class Choice:
    chosen: Candidate
    met: bool  # every check holds for `chosen`
    verdicts: list[Verdict]  # of `chosen`
    reason: str  # one line: why this candidate
    stop: bool = False  # the user's constraints hold for no candidate: commit nothing (`refusal`)


def _worst(vs: Sequence[Verdict]) -> tuple[float, float]:
    return (max((v.shortfall for v in vs), default=0.0), min((v.share for v in vs), default=1.0))


def order_to_check(candidates: Sequence[Candidate], parent: Candidate) -> list[Candidate]:
    """Learning candidates by validation success, best first: the order `choose` needs their checks in
    (a caller checks them lazily, stopping at the first that meets every check)."""
    return sorted([c for c in candidates if learns(c, parent)], key=lambda c: (-c.validation, c.moved))


def choose(candidates: Sequence[Candidate], parent: Candidate, checks: Sequence[Check], spec: KeepSpec,
           force: bool = False, finetuned: Optional[Candidate] = None) -> Choice:
    """The documented rule (module docstring). `candidates` exclude the parent; a candidate's `kept`
    must cover every check's label unless it was never reached (then it cannot be chosen as meeting)."""
    if not candidates:
        raise invalid("no alpha candidate to choose from; give --alpha-grid values or a fixed --alpha")
    pool = order_to_check(candidates, parent)
    if not pool:  # nothing beats the parent on validation: the plain best, as before constraints
        best = max(candidates, key=lambda c: (c.validation, -c.moved))
        vs = verdicts(checks, parent, best, finetuned)
        met = all(v.ok for v in vs)
        line = f"no candidate beats the parent's {_pct(parent.validation)} on validation; the best one, alpha {best.key}"
        if met or not best.kept:
            return Choice(best, met, vs, line + (f", meets --keep {spec.text}" if met and checks else ""))
        line += ", keeps " + "; ".join(f"{v.check.label} {_pct(v.candidate)} (needs {_pct(v.needed)})" for v in vs if not v.ok)
        if spec.soft or force:
            return Choice(best, False, vs, line + ("; committed (--force)" if force else "; committed as the default's best trade-off"))
        return Choice(best, False, vs, line, stop=True)
    checked = [(c, verdicts(checks, parent, c, finetuned)) for c in pool if all(v.check.label in c.kept for v in verdicts(checks, parent, c, finetuned))]
    meeting = [(c, vs) for c, vs in checked if all(v.ok for v in vs)]
    if meeting:
        best, vs = max(meeting, key=lambda cv: (cv[0].validation, _worst(cv[1])[1], -cv[0].moved))
        why = "best validation success" + (f" meeting {spec.text}" if checks else "")
        return Choice(best, True, vs, why)
    if not checked:
        raise ValueError("choose() needs the checks of at least one learning candidate")
    # A trade-off that keeps the lineage by not learning the new skill is no trade-off: when some
    # candidate meets the new skill's own check, the trade-off is made among those.
    learned = [(c, vs) for c, vs in checked if all(v.ok for v in vs if v.check.new)]
    best, vs = min(learned or checked, key=lambda cv: (_worst(cv[1])[0], -cv[0].validation, cv[0].moved))
    shortfalls = "; ".join(f"{v.check.label} {_pct(v.candidate)} (needs {_pct(v.needed)})" for v in vs if not v.ok)
    line = (f"no candidate meets --keep {spec.text}: the best trade-off, alpha {best.key}, keeps {shortfalls} "
            f"with {_pct(best.validation)} on validation")
    if spec.soft or force:
        return Choice(best, False, vs, line + ("; committed (--force)" if force else "; committed as the default's best trade-off"))
    return Choice(best, False, vs, line, stop=True)


def refusal(choice: Choice) -> RegistryError:
    """The one-line exit-5 error of a choice that must not be committed (`choice.stop`)."""
    return invalid_state(f"{choice.reason}; to change that: --rehearse SHARE (e.g. 0.2), --mode co-ft, a looser --keep, "
                         f"or --force to commit it anyway")


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def table(checks: Sequence[Check], parent: Candidate, cand: Candidate, recorded: Optional[dict[str, float]] = None,
          finetuned: Optional[Candidate] = None) -> list[dict[str, Any]]:
    """The forgetting table's rows (JSON-ready): target, parent, candidate, delta, constraint, verdict."""
    rows = []
    for v in verdicts(checks, parent, cand, finetuned):
        rows.append({"target": v.check.label, "parent": v.parent, "candidate": v.candidate,
                     "delta": None if v.candidate is None else v.candidate - v.parent,
                     "recorded": (recorded or {}).get(v.check.label), "constraint": v.check.text,
                     "needed": v.needed, "ok": v.ok})
    return rows


def format_table(rows: Sequence[dict[str, Any]], alpha_key: str, validation: Optional[float] = None) -> str:
    """What learn prints before committing."""
    head = f"{'kept':<16} {'recorded':>9} {'parent':>7} {'candidate':>10} {'delta':>7}  constraint"
    lines = [f"what alpha {alpha_key} keeps of the lineage" + (f" (validation {_pct(validation)})" if validation is not None else ""),
             head]
    for r in rows:
        delta = "-" if r["delta"] is None else f"{100 * r['delta']:+.0f} pts"
        verdict = f"{r['constraint']}: {'met' if r['ok'] else 'NOT met'} (needs {_pct(r['needed'])})"
        lines.append(f"{r['target']:<16} {_pct(r['recorded']):>9} {_pct(r['parent']):>7} {_pct(r['candidate']):>10} {delta:>7}  {verdict}")
    if not rows:
        lines.append("(no earlier skill or suite to keep)")
    return "\n".join(lines)
