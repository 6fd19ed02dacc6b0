"""Plain records that cross layers. ORM rows never leave a session; these do."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Optional, Union

# An alpha as the registry keeps it: plain JSON, a float or {modality: float}. The value type
# with its parsing and canonical text is retain.alphas.Alpha; the registry never imports it.
AlphaJson = Union[float, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Version:
    """One backbone version. `config` rebuilds the model; `recipe` says how it was made."""

    name: str  # "v3"
    number: int
    parent: Optional[str]
    weight_hash: str  # "sha256:<hex>", canonical over names, dtypes, shapes, bytes
    how: str  # base-import | pretrain | learn | replay
    created_at: dt.datetime
    config: dict[str, Any]
    recipe: dict[str, Any]
    message: str
    refs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NewScore:
    """An evaluation result to record. `skill=None` is the generalist suite."""

    skill: Optional[str]
    split: str  # "id" | "ood:<family>" | "generalist"
    successes: int
    episodes: int
    evaluator: str
    seed: Optional[int] = None  # the evaluation seed (episodes with the same seed are the same scenes)


@dataclasses.dataclass(frozen=True)
class Score:
    version: str
    skill: Optional[str]
    split: str
    successes: int
    episodes: int
    rate: float
    ci_low: float
    ci_high: float
    evaluator: str
    created_at: dt.datetime
    seed: Optional[int] = None  # None: recorded before seeds were (schema 0004)
    id: Optional[int] = None  # the evaluation's row; every evaluation is kept (registry/evaluations.py picks the figure)


GENERALIST = "generalist"  # the split (and row label) of the generalist suite; its scores have skill None

MODE_MAX = 32  # longest finetune mode learn_runs.mode holds


@dataclasses.dataclass(frozen=True)
class NewLearnRun:
    """The lineage edge a `learn` commit records beside its new version."""

    skill: str
    demo_set_id: Optional[int]
    recipe: dict[str, Any]
    delta_dir: Optional[str]  # a safetensors folder, stored as blobs; None if not kept
    alpha: AlphaJson
    sweep: list[dict[str, Any]]
    timings: dict[str, float]
    status: str = "committed"

    @property
    def mode(self) -> Optional[str]:
        """How the skill was finetuned (task-ft | co-ft | external), as the recipe says: stored in
        learn_runs.mode so `lineage` need not decode recipes. None unless a string of <= MODE_MAX chars."""
        mode = self.recipe.get("mode")
        return mode if isinstance(mode, str) and len(mode) <= MODE_MAX else None


@dataclasses.dataclass(frozen=True)
class LearnRun:
    id: int
    skill: str
    parent: Optional[str]
    result: Optional[str]
    demo_set_id: Optional[int]
    mode: Optional[str]  # task-ft | co-ft | external (weights finetuned elsewhere); None if the recipe names none
    recipe: dict[str, Any]
    delta: Optional[str]  # folder id ("sha256:<hex>") of the stored delta
    alpha: AlphaJson
    sweep: list[dict[str, Any]]
    timings: dict[str, float]
    status: str
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Skill:
    id: int
    name: str
    instructions: tuple[str, ...]
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class DemoSet:
    id: int
    skill: str
    folder: str  # folder id ("sha256:<hex>")
    source: str
    episodes: int
    frames: int
    fmt: str
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class RefLogEntry:
    ref: str
    old: Optional[str]
    new: Optional[str]
    action: str  # base-import | commit | learn | replay | rollback | pretrain
    reason: str
    who: str
    at: dt.datetime


@dataclasses.dataclass(frozen=True)
class LineageEdge:
    parent: str
    child: str
    how: str
    skill: Optional[str]
    mode: Optional[str]  # the learn run's finetune mode: task-ft | co-ft | external
    alpha: Optional[AlphaJson]


@dataclasses.dataclass(frozen=True)
class Lineage:
    versions: list[Version]
    edges: list[LineageEdge]
    refs: dict[str, str]  # ref -> version name


@dataclasses.dataclass(frozen=True)
class StoredFile:
    path: str  # relative path inside the folder
    blob: str  # sha256 hex
    size: int


@dataclasses.dataclass(frozen=True)
class VersionDetail:
    """Everything `show` prints about one version."""

    version: Version
    files: list[StoredFile]
    learn_run: Optional[LearnRun]
    scores: list[Score]
    children: list[str]


@dataclasses.dataclass
class VerifyReport:
    blobs_checked: int = 0
    versions_checked: int = 0
    demo_sets_checked: int = 0  # those recorded by reference, re-hashed where they live
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclasses.dataclass
class GcReport:
    grace_seconds: float
    dry_run: bool
    orphan_files: list[str] = dataclasses.field(default_factory=list)  # store files with no row
    unreferenced_blobs: list[str] = dataclasses.field(default_factory=list)  # rows nothing references
    unreferenced_folders: list[str] = dataclasses.field(default_factory=list)
    work_folders: list[str] = dataclasses.field(default_factory=list)  # HOME/work folders of processes that are gone
    bytes_freed: int = 0
