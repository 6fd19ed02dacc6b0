"""The merge coefficient alpha, and the one syntax every command accepts for it.

    0.5                                   one alpha for every tensor
    vision=1,language=0.8,action=1        one per modality (all three required)
    vision=1,language=0.8,action=1,other=0   ... and for tensors no partition rule claims

A single number applies to every modality, `other` included, so it needs no partition map. In
the keyed form `other` is optional: without it, a tensor that no partition rule claims is an
error rather than silently merged. Values lie in [0, 1] unless `extrapolate=True` (the CLI's
`--extrapolate`), since alpha > 1 moves past the finetuned weights and < 0 away from them.

`Alpha` is the one value type for it: `parse_alpha` reads the text, `as_alpha` reads any form
(an Alpha, a number, a recorded dict or the text), `str(alpha)` is its one canonical text (modality
keys sorted, each number exact), which is also its `key`, and `to_json()` is the plain JSON the
registry records (a float when uniform, else a dict with sorted keys).

Example:
    >>> a = parse_alpha("vision=1,language=0.8,action=1")
    >>> a.for_modality("language")
    0.8
    >>> str(a)
    'action=1,language=0.8,vision=1'
    >>> a.to_json()
    {'action': 1.0, 'language': 0.8, 'vision': 1.0}
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from registry.errors import invalid

MODALITIES: tuple[str, ...] = ("vision", "language", "action", "other")
REQUIRED: tuple[str, ...] = ("vision", "language", "action")


@dataclasses.dataclass(frozen=True)
class Alpha:
    """Per-modality merge coefficients; `other=None` means unclaimed tensors are an error."""

    vision: float
    language: float
    action: float
    other: float | None = None

    @classmethod
    def uniform(cls, value: float) -> "Alpha":
        return cls(value, value, value, value)

    @property
    def is_uniform(self) -> bool:
        return self.vision == self.language == self.action == self.other

    def for_modality(self, modality: str) -> float | None:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        return getattr(self, modality)

    def _given(self) -> dict[str, float]:
        return {m: v for m in sorted(MODALITIES) if (v := getattr(self, m)) is not None}

    def to_json(self) -> float | dict[str, float]:
        """The plain JSON a registry record keeps: a float when uniform, else a dict with sorted keys."""
        if self.is_uniform:
            return float(self.vision)
        return {m: float(v) for m, v in self._given().items()}

    def per_modality(self) -> float | dict[str, float]:
        """A float when uniform, else a dict in modality order: what a merged checkpoint's metadata
        records (its bytes are part of the stored files, so the order stays as it was written)."""
        if self.is_uniform:
            return self.vision
        return {m: v for m in MODALITIES if (v := getattr(self, m)) is not None}

    @property
    def key(self) -> str:
        """The canonical text, used to tell candidates apart and to print them."""
        return str(self)

    def tie_rank(self) -> tuple[float, float]:
        """Smaller keeps more of the parent: the sum of the coefficients, then the language one."""
        if self.is_uniform:
            return (self.vision, self.vision)
        return (sum(self._given().values()), self.language)

    def __str__(self) -> str:
        if self.is_uniform:
            return _fmt(self.vision)
        return ",".join(f"{m}={_fmt(v)}" for m, v in self._given().items())


def _fmt(v: float) -> str:
    return f"{v:g}" if float(f"{v:g}") == v else repr(v)


def _number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise invalid(f"alpha {where}{text!r} is not a number; write e.g. 0.5 or vision=1,language=0.8,action=1") from None
    if not math.isfinite(v):
        raise invalid(f"alpha {where}{text!r} is not finite; use a number in [0, 1]")
    return v


IN_RANGE = "use a value in [0, 1]"
"""The fix an out-of-range alpha names by default; only a caller that has a way to extrapolate
(`retain merge --extrapolate`) names it, so no error advises a flag its command lacks."""


def _check_range(a: Alpha, extrapolate: bool, fix: str = IN_RANGE) -> Alpha:
    if extrapolate:
        return a
    for m in MODALITIES:
        v = getattr(a, m)
        if v is not None and not 0.0 <= v <= 1.0:
            where = f"{m}=" if not a.is_uniform else ""
            raise invalid(f"alpha {where}{_fmt(v)} is outside [0, 1]; {fix}")
    return a


def parse_alpha(text: str, extrapolate: bool = False, fix: str = IN_RANGE) -> Alpha:
    """Parse `0.5` or `vision=1,language=0.8,action=1[,other=...]`; raise RegistryError if malformed.

    `fix` is what an out-of-range value's error tells the user to do."""
    s = (text or "").strip()
    if not s:
        raise invalid("alpha is empty; write e.g. 0.5 or vision=1,language=0.8,action=1")
    if "=" not in s:
        return _check_range(Alpha.uniform(_number(s, "")), extrapolate, fix)
    values: dict[str, float] = {}
    for part in s.split(","):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise invalid(f"alpha part {part.strip()!r} needs the form modality=value; write e.g. vision=1,language=0.8,action=1")
        if key not in MODALITIES:
            raise invalid(f"alpha names unknown modality {key!r}; use {', '.join(MODALITIES)}")
        if key in values:
            raise invalid(f"alpha gives {key} twice; give each modality once")
        values[key] = _number(val.strip(), f"for {key} ")
    return _check_range(from_mapping(values), extrapolate, fix)


def from_mapping(values: Mapping[str, float]) -> Alpha:
    missing = [m for m in REQUIRED if m not in values]
    if missing:
        raise invalid(f"alpha is missing {', '.join(missing)}; give vision, language and action (other is optional), or one number")
    unknown = sorted(set(values) - set(MODALITIES))
    if unknown:
        raise invalid(f"alpha names unknown modality {unknown[0]!r}; use {', '.join(MODALITIES)}")
    other = values.get("other")
    return Alpha(float(values["vision"]), float(values["language"]), float(values["action"]), None if other is None else float(other))


def as_alpha(value: Any, extrapolate: bool = False) -> Alpha:
    """Accept an Alpha, a number, a dict per modality (as recorded in a learn run) or the string syntax."""
    if isinstance(value, Alpha):
        return _check_range(value, extrapolate)
    if isinstance(value, bool):
        raise invalid(f"alpha {value!r} is not a number")
    if isinstance(value, (int, float)):
        return _check_range(Alpha.uniform(_number(str(float(value)), "")), extrapolate)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _number(str(v), f"for {k} ")
        return _check_range(from_mapping({str(k).lower(): float(v) for k, v in value.items()}), extrapolate)
    if isinstance(value, str):
        return parse_alpha(value, extrapolate)
    raise invalid(f"alpha {value!r} is not a number, a per-modality dict or an alpha string")
