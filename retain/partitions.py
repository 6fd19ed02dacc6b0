"""Partition maps: which modality (vision / language / action / other) each tensor belongs to.

A map is an ordered list of rules `(regex, modality)`; the first rule whose regex is found in the
tensor name (`re.search`, so anchor with `^` for a prefix) decides. A name no rule claims gets
`None`; the merge refuses it unless the alpha gives `other` a value.

Presets cover the built-in policy and the public pi0 / pi0.5 (openpi PyTorch) and pi0 / SmolVLA
(LeRobot) checkpoints. A user rules file is plain text, one rule per line:

    # comment lines and blank lines are ignored
    vision:   ^encoder\\.
    language: ^decoder\\.(embed|layers)\\.
    action:   ^head\\.
    other:    ^buffers\\.

`modality: regex` — the text after the first colon (trimmed) is a Python regular expression.
A line that does not parse (no colon, unknown modality, bad regex) is refused with its line number.

Example:
    >>> pm = get_partition_map("openpi-pi0")
    >>> pm.modality_of("paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight")
    'action'
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterable

from registry.errors import invalid, not_found

from retain.alphas import MODALITIES


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str
    modality: str

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise invalid(f"rule modality {self.modality!r} is unknown; use {', '.join(MODALITIES)}")


@dataclasses.dataclass(frozen=True)
class PartitionMap:
    """Ordered rules; `modality_of(name)` gives the first matching rule's modality or None."""

    name: str
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple((re.compile(r.pattern), r.modality) for r in self.rules))

    def modality_of(self, tensor_name: str) -> str | None:
        for rx, modality in self._compiled:  # type: ignore[attr-defined]
            if rx.search(tensor_name):
                return modality
        return None

    def to_text(self) -> str:
        """The map in rules-file syntax (a starting point for a custom file)."""
        return "".join(f"{r.modality}: {r.pattern}\n" for r in self.rules)


def _rules(*pairs: tuple[str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(p, m) for m, p in pairs)


def _openpi(prefix: str, extra_action: tuple[str, ...]) -> tuple[Rule, ...]:
    p = re.escape(prefix)
    pg = p + r"paligemma_with_expert\.paligemma\."
    tops = "|".join(extra_action)
    return _rules(
        ("vision", rf"^{pg}model\.vision_tower\."),
        ("vision", rf"^{pg}model\.multi_modal_projector\."),
        ("language", rf"^{pg}model\.language_model\."),
        ("language", rf"^{pg}lm_head\."),
        ("action", rf"^{p}paligemma_with_expert\.gemma_expert\."),
        ("action", rf"^{p}(?:{tops})\."),
    )


# Top-level action-expert modules of pi0, pi0.5 and SmolVLA. pi0 and pi0.5 share one layout: pi0.5
# drops state_proj and conditions on time with time_mlp_* instead of action_time_mlp_*.
_ACTION_TOPS = ("state_proj", "action_in_proj", "action_out_proj", r"action_time_mlp_\w+", r"time_mlp_\w+")

PRESETS: dict[str, PartitionMap] = {
    "builtin": PartitionMap("builtin", _rules(("vision", r"^vision\."), ("language", r"^language\."), ("action", r"^action\."))),
    "openpi-pi0": PartitionMap("openpi-pi0", _openpi("", _ACTION_TOPS)),
    "openpi-pi05": PartitionMap("openpi-pi05", _openpi("", _ACTION_TOPS)),
    "lerobot-pi0": PartitionMap("lerobot-pi0", _openpi("model.", _ACTION_TOPS)),
    "lerobot-smolvla": PartitionMap(
        "lerobot-smolvla",
        _rules(
            ("vision", r"^model\.vlm_with_expert\.vlm\.model\.vision_model\."),
            ("vision", r"^model\.vlm_with_expert\.vlm\.model\.connector\."),
            ("language", r"^model\.vlm_with_expert\.vlm\.model\.text_model\."),
            ("language", r"^model\.vlm_with_expert\.vlm\.lm_head\."),
            ("action", r"^model\.vlm_with_expert\.lm_expert\."),
            ("action", rf"^model\.(?:{'|'.join(_ACTION_TOPS)})\."),
        ),
    ),
}


def parse_rules(text: str, source: str = "rules") -> PartitionMap:
    """Parse rules-file text (see the module docstring); raise RegistryError naming the bad line."""
    rules = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        modality, sep, pattern = line.partition(":")
        modality, pattern = modality.strip().lower(), pattern.strip()
        if not sep or not pattern:
            raise invalid(f"{source}:{lineno}: expected 'modality: regex', got {line!r}")
        if modality not in MODALITIES:
            raise invalid(f"{source}:{lineno}: unknown modality {modality!r}; use {', '.join(MODALITIES)}")
        try:
            re.compile(pattern)
        except re.error as e:
            raise invalid(f"{source}:{lineno}: bad regular expression {pattern!r} ({e}); fix or quote it") from None
        rules.append(Rule(pattern, modality))
    if not rules:
        raise invalid(f"{source} holds no rules; write one 'modality: regex' per line")
    return PartitionMap(str(source), tuple(rules))


def load_rules(path: str | os.PathLike) -> PartitionMap:
    p = Path(path)
    if not p.is_file():
        raise not_found(f"rules file {p} does not exist; pass a text file of 'modality: regex' lines")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise invalid(f"rules file {p} is not text; write one 'modality: regex' per line") from None
    return parse_rules(text, str(p))


def get_partition_map(preset: str | None = None, rules: str | os.PathLike | None = None) -> PartitionMap:
    """A preset by name, or the rules file at `rules` (give one, not both)."""
    if preset and rules:
        raise invalid("give either a preset or a rules file, not both")
    if rules:
        return load_rules(rules)
    if preset is None:
        raise invalid(f"no partition map given; pick a preset ({', '.join(PRESETS)}) or a rules file")
    try:
        return PRESETS[preset]
    except KeyError:
        raise invalid(f"unknown partition preset {preset!r}; choose one of {', '.join(PRESETS)} or pass a rules file") from None


def resolve_partition(names: Iterable[str], preset: str | None = None,
                      rules: str | os.PathLike | None = None) -> tuple[PartitionMap | None, bool]:
    """The map a command uses on a checkpoint holding `names`, and whether it was detected.

    An explicit preset or rules file wins; otherwise the preset that claims the most tensors
    (`detect_preset`). `partitions` and `merge` both call this, so they agree on the same file.
    """
    if preset is not None or rules is not None:
        return get_partition_map(preset, rules), False
    detected = detect_preset(names)
    return detected, detected is not None


def detect_preset(names: Iterable[str]) -> PartitionMap | None:
    """The preset that claims the most of `names` (None if none claims any): a guess to show users."""
    names = list(names)
    best, best_count = None, 0
    for pm in PRESETS.values():
        count = sum(pm.modality_of(n) is not None for n in names)
        if count > best_count:
            best, best_count = pm, count
    return best
