"""`LearnOptions`: how one skill is learned, and the flat form a learn recipe records them in.

The finetune's own options are a nested `FinetuneRecipe` (retain.finetune), declared once there;
the rest say how alpha is chosen and how the step is scored. `LearnOptions.of(**flat)` builds the
options from flat names (the CLI's, and a recorded recipe's), and `record()` writes them flat
again for storage, in the order recipes have always been recorded.

Example:
    >>> opts = LearnOptions.of(steps=100, alpha="0.5", episodes=20)
    >>> opts.finetune.steps, str(opts.alpha), opts.record()["steps"]
    (100, '0.5', 100)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

from registry.errors import invalid
from retain.alphas import Alpha, parse_alpha
from retain.finetune import FinetuneRecipe
from retain.select import DEFAULT_GRID, STRATEGIES, check_grid

DEFAULT_VALIDATION = "ood:position"
AUTO = "auto"
FINETUNE_CMD_MODE = "finetune-cmd"  # the recorded mode of a finetune run by the user's own command
OMITTED_WHEN_UNSET = ("finetune_cmd", "finetune_timeout")  # recorded only when used: older recipes keep their bytes

# The recorded order of the flat recipe: a recipe's bytes are kept, so this order is too. Finetune
# fields not named here (added later) follow at the end.
RECORD_ORDER = (
    "mode", "mix", "rehearse", "alpha", "strategy", "alpha_grid", "validation_family", "steps", "lr", "lr_scale",
    "batch_size", "seed", "threads", "nproc", "pretrain_episodes", "demo_episodes", "demo_seed", "episodes", "eval_seed",
    "compare_finetuned", "eval_cmd", "preset",
)


def mark_finetune_cmd(recipe: dict[str, Any]) -> dict[str, Any]:
    """A flat recipe of a --finetune-cmd run: its mode says so, and the built-in finetune's options,
    which the user's trainer never saw, are left out (the seed stays: the command gets it)."""
    recipe["mode"] = FINETUNE_CMD_MODE
    for k in ("mix", "rehearse", "steps", "lr", "lr_scale", "batch_size", "threads", "nproc", "pretrain_episodes", "compile"):
        recipe.pop(k, None)
    return recipe


@dataclasses.dataclass(frozen=True)
class LearnOptions:
    """How one skill is learned. Every field lands in the recorded recipe."""

    finetune: FinetuneRecipe = dataclasses.field(default_factory=FinetuneRecipe)
    """The finetune (mode, mix, rehearsal, steps, lr, ...); its defaults follow the testbed report."""
    alpha: Union[Alpha, str] = AUTO
    """"auto" (search with `strategy`), or a fixed Alpha (text such as "0.5" is parsed)."""
    strategy: str = "broad"
    """auto only: broad (one alpha for every modality, the language search and per-modality combinations,
    checked against the lineage with `keep`), language (vision = action = 1, the paper's recommendation
    and the default before constraints), grid (one alpha for every modality) or coordinate (per
    modality, language first); docs/chains.md says why broad."""
    alpha_grid: tuple[float, ...] = DEFAULT_GRID
    """Candidate alphas for the search, each in [0, 1]."""
    keep: tuple[str, ...] = ()
    """What the chosen candidate must keep of the lineage (retain.keep): () the soft default
    (DEFAULT_KEEP), ("none",) nothing: the choice on validation alone, as before constraints."""
    force: bool = False
    """Commit the best trade-off when no candidate meets `keep` (else: exit 5, nothing committed)."""
    keep_episodes: int = 20
    """Paired episodes per earlier skill and for the suite when checking candidates against `keep`."""
    validation_family: Optional[str] = None
    """The ONE OOD family alpha is chosen on (default ood:position; "external" with an eval command)."""
    demo_episodes: int = 50
    """Built-in demos: expert episodes collected in the narrow ID setting."""
    demo_seed: int = 0
    episodes: int = 50
    """Evaluation episodes per (skill, split); the same seed across versions and alphas (paired)."""
    eval_seed: int = 12345
    compare_finetuned: bool = True
    """Also score the plain finetune (alpha = 1) on the new skill, for the record."""
    eval_cmd: Optional[str] = None
    """Score candidates with the user's evaluator ('CMD {checkpoint}' printing JSON) instead of the simulator."""
    preset: Optional[str] = None
    """Partition preset (default: the policy's own)."""
    finetune_cmd: Optional[str] = None
    """Your own trainer instead of the built-in finetune: a shell command using {parent} (the head's
    weights + config.json), {demos} (the dataset's path or URL), {out} (where it leaves the
    finetuned safetensors) and {seed} (the finetune's seed); see retain.trainer_cmd."""
    finetune_timeout: Optional[float] = None
    """Seconds --finetune-cmd may run before it is stopped (None: no limit)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha_grid", check_grid(self.alpha_grid))
        if isinstance(self.alpha, str) and self.alpha != AUTO:
            object.__setattr__(self, "alpha", parse_alpha(self.alpha))
        if self.auto and (self.strategy not in STRATEGIES or self.strategy == "fixed"):
            raise invalid(f"unknown alpha strategy {self.strategy!r}; choose one of broad, grid, language, coordinate")
        if self.episodes < 1:
            raise invalid(f"--episodes must be at least 1, got {self.episodes}")
        if self.keep_episodes < 1:
            raise invalid(f"--keep-episodes must be at least 1, got {self.keep_episodes}")
        from retain.keep import parse_keep

        object.__setattr__(self, "keep", tuple(str(k) for k in self.keep))
        parse_keep(self.keep)  # malformed, out of range or contradictory: refused before any work
        if self.demo_episodes < 1:
            raise invalid(f"--demo-episodes must be at least 1, got {self.demo_episodes}")
        if self.validation_family is not None and self.eval_cmd is None and not self.validation_family.startswith("ood:"):
            raise invalid(f"validation family {self.validation_family!r} is not an OOD family; use e.g. ood:position")
        if self.finetune_cmd is not None:
            from retain.trainer_cmd import check_template

            check_template(self.finetune_cmd)
            if self.finetune.mode != "task-ft" or self.finetune.rehearse:
                raise invalid("--mode co-ft, --mix and --rehearse shape the built-in finetune; with --finetune-cmd your "
                              "trainer decides what it trains on: drop them")
        if self.finetune_timeout is not None and not self.finetune_timeout > 0:
            raise invalid(f"--finetune-timeout must be a positive number of seconds, got {self.finetune_timeout}")

    @property
    def auto(self) -> bool:
        """Whether alpha is searched (else it is the fixed `alpha`)."""
        return self.alpha == AUTO

    @property
    def val_family(self) -> str:
        if self.validation_family:
            return self.validation_family
        return "ood:external" if self.eval_cmd else DEFAULT_VALIDATION

    @classmethod
    def of(cls, **flat: Any) -> "LearnOptions":
        """The options from flat names: the finetune's fields go to the nested recipe."""
        recipe_fields = {f.name for f in dataclasses.fields(FinetuneRecipe)}
        recipe = {k: v for k, v in flat.items() if k in recipe_fields}
        return cls(finetune=FinetuneRecipe(**recipe), **{k: v for k, v in flat.items() if k not in recipe_fields})

    def record(self) -> dict[str, Any]:
        """The options flat, as a recipe records them (the validation family resolved)."""
        flat = {**self.finetune.to_dict(), **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "finetune"}}
        flat.update(alpha=AUTO if self.auto else str(self.alpha), alpha_grid=list(self.alpha_grid),
                    validation_family=self.val_family, keep=list(self.keep))
        for k in OMITTED_WHEN_UNSET:
            if flat[k] is None:
                del flat[k]
        return {**{k: flat[k] for k in RECORD_ORDER}, **{k: v for k, v in flat.items() if k not in RECORD_ORDER}}

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], **changes: Any) -> "LearnOptions":
        """The options a recorded recipe was learned with, with `changes` applied (None keeps)."""
        known = {f.name for f in dataclasses.fields(FinetuneRecipe)} | {f.name for f in dataclasses.fields(cls)} - {"finetune"}
        base = {k: v for k, v in recipe.items() if k in known}
        base.setdefault("lr_scale", "")  # recorded before the option existed: one rate for every weight
        base.setdefault("keep", ("none",))  # recorded before constraints: alpha was chosen on validation alone
        if base.get("mode") in ("external", FINETUNE_CMD_MODE):  # finetuned outside retain: no built-in finetune options apply
            base["mode"] = "task-ft"
        base.update({k: v for k, v in changes.items() if v is not None})
        if "alpha_grid" in base:
            base["alpha_grid"] = tuple(base["alpha_grid"])
        base["keep"] = tuple(base["keep"])
        return cls.of(**base)
