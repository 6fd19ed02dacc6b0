"""Settings: the ranges a scene is drawn from. One narrow ID setting (where a new skill's demos are
collected), one OOD family per kind of variation, and the broad pretraining/generalist setting.

Each OOD family changes exactly one thing relative to "id", so a drop in success names its cause.
The generalist setting spans every family at once, which is what makes the pretrained base robust
and what narrow finetuning can erode. All fields are plain data: edit or add a `Setting` to tune
the testbed, no code changes needed.
"""
from __future__ import annotations

import dataclasses

from registry.errors import invalid


@dataclasses.dataclass(frozen=True)
class Setting:
    """Variation ranges of one setting."""

    name: str
    description: str
    layout: str = "nominal"             # "nominal": each entity near its task's layout; "anywhere": uniform
    pos_jitter: float = 0.12            # half-width of the uniform jitter around nominal positions
    distractors: tuple[int, int] = (0, 0)          # inclusive range of extra loose objects
    fixture_distractors: tuple[int, int] = (0, 0)  # inclusive range of extra receptacles/mats/buttons
    backgrounds: tuple[int, ...] = (0,)  # indices into render.BACKGROUNDS
    brightness: tuple[float, float] = (1.0, 1.0)
    tint: float = 0.0                   # max per-channel colour cast (+-)
    camera_shift: float = 0.0           # max table-units shift of the camera centre (+-, per axis)
    camera_zoom: tuple[float, float] = (1.0, 1.0)
    camera_rot: float = 0.0             # max rotation in radians (+-)
    camera_shear: float = 0.0           # max shear (+-), a cheap stand-in for tilt
    variants: str = "id"                # appearance of a skill's objects: "id", "ood" or "all"
    phrasing: str = "canonical"         # instructions: "canonical", "train" (pretraining pool), "heldout"
    skill_things: bool = False          # distractors may be the skills' things (plate, rack, ...), unnamed
    opt_in: bool = False                # an OOD family scored only when named, outside the default pool

    def __post_init__(self) -> None:
        if self.layout not in ("nominal", "anywhere"):
            raise ValueError(f"{self.name}: layout must be 'nominal' or 'anywhere', got {self.layout!r}")
        if self.variants not in ("id", "ood", "all"):
            raise ValueError(f"{self.name}: variants must be id/ood/all, got {self.variants!r}")
        if self.phrasing not in ("canonical", "train", "heldout", "paraphrase"):
            raise ValueError(f"{self.name}: phrasing must be canonical/train/heldout/paraphrase, got {self.phrasing!r}")
        for lo, hi, what in (self.distractors + ("distractors",), self.fixture_distractors + ("fixture_distractors",),
                             self.brightness + ("brightness",), self.camera_zoom + ("camera_zoom",)):
            if lo > hi:
                raise ValueError(f"{self.name}: {what} range ({lo}, {hi}) is reversed")


ID = Setting("id", "narrow: small position range, canonical table and camera, no distractors, one phrasing")

# Broad in positions, lighting, objects and phrasing, moderate in clutter and camera motion: a
# CPU-scale base learned language-conditioned localisation from this range but not from the
# first one tried (1-4 distractors, 0-2 extra receptacles, 6 tables, camera rotation up to 0.3
# rad), where its behaviour cloning never came to use the image (benchmarks/vision_use.py).
_BROAD = dict(
    layout="anywhere", distractors=(0, 2), fixture_distractors=(0, 1), backgrounds=(0, 1, 2),
    brightness=(0.65, 1.3), tint=0.12, camera_shift=0.05, camera_zoom=(0.95, 1.05), camera_rot=0.1,
    camera_shear=0.05, variants="all", phrasing="train",
)

_SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        ID,
        dataclasses.replace(ID, name="ood:position", description="positions anywhere on the table", layout="anywhere"),
        dataclasses.replace(ID, name="ood:object", description="unseen colours/shapes of the skill's objects",
                            variants="ood"),
        dataclasses.replace(ID, name="ood:background", description="other table surfaces, brightness and tint",
                            backgrounds=(1, 2, 3, 4, 5), brightness=(0.65, 1.3), tint=0.12),
        dataclasses.replace(ID, name="ood:distractor", description="extra objects and receptacles on the table",
                            distractors=(2, 4), fixture_distractors=(1, 2)),
        dataclasses.replace(ID, name="ood:viewpoint", description="camera shifted, rotated, zoomed and sheared",
                            camera_shift=0.12, camera_zoom=(0.85, 1.15), camera_rot=0.3, camera_shear=0.15),
        dataclasses.replace(ID, name="ood:language", description="paraphrased instructions never used in ID demos",
                            phrasing="heldout"),
        # a text encoder pretrained on other text can carry a skill to wordings no robot data held;
        # opt-in, so the default pool, and every figure recorded on it, stays as it was
        dataclasses.replace(ID, name="ood:paraphrase", description="rewordings with verbs no pretraining or ID instruction uses "
                            "(scored only when named)", phrasing="paraphrase", opt_in=True),
        Setting("pretrain", "broad variation of every kind: the pretraining data distribution", **_BROAD),
        # every placing scene holds 1-3 fixtures besides the named receptacle, so a base must pick
        # a receptacle by its name; the skills' things appear too, never named (a base that has
        # seen a rack only has to learn its word, as the crate probes' base had seen the box)
        Setting("pretrain-clutter", "pretraining among 1-3 extra receptacles and the skills' things, unnamed",
                **dict(_BROAD, fixture_distractors=(1, 3), skill_things=True)),
        # pretrain-clutter without the skills' things: continuing the shipped base's DAgger stage
        # here taught an earlier base to pick a receptacle among several (docs/testbed.md)
        Setting("pretrain-receptacles", "pretraining with 1-3 extra receptacles in every scene (no skill things)",
                **dict(_BROAD, fixture_distractors=(1, 3))),
        Setting("generalist", "the generalist suite: pretraining tasks under the same broad variation", **_BROAD),
    ]
}

SETTINGS: list[str] = list(_SETTINGS)
OOD_FAMILIES: list[str] = [s for s in SETTINGS if s.startswith("ood:") and not _SETTINGS[s].opt_in]  # the default pool


def register_setting(setting: Setting, *, replace: bool = False) -> None:
    """Make a custom setting available by name (e.g. a wider "ood:position" while tuning the testbed).

    Example:
        register_setting(dataclasses.replace(get_setting("id"), name="id-wide", pos_jitter=0.2))
    """
    if setting.name in _SETTINGS and not replace:
        raise invalid(f"setting {setting.name!r} already exists; pass replace=True to redefine it")
    _SETTINGS[setting.name] = setting
    for names, keep in ((SETTINGS, True), (OOD_FAMILIES, setting.name.startswith("ood:") and not setting.opt_in)):
        if keep and setting.name not in names:
            names.append(setting.name)


def get_setting(name: "str | Setting") -> Setting:
    """The setting called `name` (a Setting passes through, for custom ranges)."""
    if isinstance(name, Setting):
        return name
    try:
        return _SETTINGS[name]
    except KeyError:
        raise invalid(f"unknown setting {name!r}; choose one of: {', '.join(SETTINGS)}") from None
