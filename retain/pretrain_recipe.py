"""What decides a pretrained base's weights: the recipe (data scale, steps, seed, threads, device,
policy config, DAgger stages and continuations), its named presets, and the result of running it.

retain.pretrain runs a recipe; retain.pretrain_run keeps a long run's folder. Both read these, and
nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from registry.errors import invalid
from retain.train import TrainReport

POLICY = "builtin-vla"
RECIPE_VERSION = 2  # bump when pretraining code changes what a recipe produces

# Named sizes: `policy_config` overrides of the builtin VLA config plus the data/optimisation scale.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for tests and smoke runs
    "tiny": {
        "policy_config": {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
                          "vision_channels": 16, "vocab_size": 512, "chunk": 4, "execute": 2},
        "episodes": 24, "steps": 20, "lr": 1e-3, "batch_size": 16,
    },
    # the base shipped until 5 December 2026 (41% of the generalist suite): each setting is there
    # because it made the base use its camera, place, or pick a receptacle by name (the findings:
    # docs/measurements.md, "The default base")
    "clutter": {
        "policy_config": {"image_size": 64, "max_words": 12, "vision_film": True, "locate_weight": 5.0,
                          "locate_heatmap": True, "locate_feeds_action": True},
        "episodes": 12000, "steps": 6000, "lr": 1e-3, "batch_size": 48, "threads": 2,
        "dagger_episodes": 3000, "dagger_steps": 1500, "dagger_roll_in": 0.6, "dagger_setting": "pretrain-clutter",
    },
}
# the shipped default base: "clutter" continued for 1,000 and then 3,000 DAgger steps among extra
# receptacles, which lifted the generalist suite from 41% to 56% (docs/testbed.md, the ladder)
PRESETS["default"] = {**PRESETS["clutter"], "continuations": [{"setting": "pretrain-receptacles", "steps": 1000},
                                                              {"setting": "pretrain-receptacles", "steps": 3000}]}
# the clutter recipe with all-MiniLM-L6-v2 as the language backbone (frozen while pretraining; needs
# the minilm extra). max_words counts its word pieces, so the longest instruction fits whole
PRESETS["minilm"] = {**PRESETS["clutter"], "policy_config": {**PRESETS["clutter"]["policy_config"],
                                                              "language_backbone": "minilm", "max_words": 24}}


@dataclasses.dataclass(frozen=True)
class Continuation:
    """One more DAgger stage after pretraining's own, in a setting of its own: how a finished base is
    continued (`benchmarks/dagger_continue.py`), written into the recipe so `retain pretrain`
    makes the continued base from scratch. Its demos are the recipe's episodes collected again in
    `setting`; its rollouts start from the weights the stage before left."""

    setting: str = ""  # demos and rollouts ("": the recipe's own `setting` and `dagger_setting`)
    episodes: int = 3000  # policy rollouts the expert relabels
    steps: int = 1000
    lr: float = 3e-4
    share: float = 0.5  # of each batch from the relabelled states
    roll_in: float = 0.0  # the expert drives each rollout's first U[0, this) of its steps
    threads: int = 0  # torch threads for this stage (0: the recipe's); part of what sets its bytes

    def __post_init__(self) -> None:
        if min(self.episodes, self.steps) < 1 or self.threads < 0:
            raise invalid(f"a continuation needs at least 1 episode and 1 step and threads >= 0, got {self}")
        if not 0.0 < self.share < 1.0 or self.lr <= 0 or not 0.0 <= self.roll_in < 1.0:
            raise invalid(f"a continuation's share must be in (0, 1), lr positive and roll_in in [0, 1), got {self}")
        if self.setting:
            from retain.sim.settings import get_setting

            get_setting(self.setting)

    @classmethod
    def from_value(cls, value: "Continuation | dict[str, Any]") -> "Continuation":
        if isinstance(value, cls):
            return value
        try:
            return cls(**value)
        except TypeError as e:
            raise invalid(f"a continuation is a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}; got {value!r} ({e})")

    def stage_recipe(self, recipe: "PretrainRecipe") -> "PretrainRecipe":
        """The recipe its DAgger stage reads (settings, roll-in, threads; seeds and batch are the recipe's)."""
        moved = {"setting": self.setting, "dagger_setting": self.setting} if self.setting else {}
        return dataclasses.replace(recipe, **moved, dagger_roll_in=self.roll_in, threads=self.threads or recipe.threads,
                                   continuations=())


@dataclasses.dataclass
class PretrainRecipe:
    """Everything that determines a pretrained base's bytes."""

    config: str = "default"  # the preset the recipe started from (documentation only)
    policy: str = POLICY
    policy_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # full, resolved config
    episodes: int = 12000  # generalist expert episodes collected (spread over all pretraining tasks)
    steps: int = 6000
    lr: float = 1e-3
    batch_size: int = 48
    seed: int = 0  # seeds data collection, initialisation and batch order
    threads: int = 1  # torch threads: part of the recipe (it can change float rounding); the default
    # base uses 2 (fastest on an idle 2-core machine), 1 suits a machine shared with other jobs
    setting: str = "pretrain"  # simulator setting the demos come from
    noise: float = 0.1  # DART noise on executed expert actions while collecting (recorded actions stay clean)
    # DAgger stage (off at 0 episodes): roll the trained policy out, label its states with the
    # expert's chunks (retain/dagger.py), then train `dagger_steps` more with `dagger_share` of
    # each batch from those states and the rest from the expert demos
    dagger_episodes: int = 0
    dagger_steps: int = 0
    dagger_lr: float = 3e-4
    dagger_share: float = 0.5
    dagger_roll_in: float = 0.0  # the expert drives each rollout's first U[0, this) of its steps
    dagger_setting: str = ""  # the setting the stage rolls out in ("": the demos' `setting`)
    device: str = "cpu"  # the kind of device it trains on (cpu or cuda): the arithmetic differs between them
    bf16: bool = False  # bf16 autocast of the forward pass (cuda only)
    recipe_version: int = RECIPE_VERSION
    compile: bool = False  # torch.compile of the forward (it can change float rounding); recorded only when on
    # more DAgger stages after the first, each in its own setting; recorded only when there are some
    continuations: tuple[Continuation, ...] = ()

    def __post_init__(self) -> None:
        self.continuations = tuple(Continuation.from_value(c) for c in self.continuations)
        if self.episodes < 1:
            raise invalid(f"--episodes must be at least 1, got {self.episodes}")
        if self.steps < 1:
            raise invalid(f"--steps must be at least 1, got {self.steps}")
        if self.seed < 0:
            raise invalid(f"--seed must be >= 0, got {self.seed}")
        if self.threads < 1:
            raise invalid(f"threads must be at least 1, got {self.threads}")
        if min(self.dagger_episodes, self.dagger_steps) < 0 or (self.dagger_episodes > 0) != (self.dagger_steps > 0):
            raise invalid(f"--dagger-episodes ({self.dagger_episodes}) and --dagger-steps ({self.dagger_steps}) "
                          "go together: both positive for a DAgger stage, both 0 for none")
        if not 0.0 < self.dagger_share < 1.0 or self.dagger_lr <= 0:
            raise invalid(f"dagger_share must be in (0, 1) and dagger_lr positive, got {self.dagger_share} and {self.dagger_lr}")
        if not 0.0 <= self.dagger_roll_in < 1.0:
            raise invalid(f"--dagger-roll-in must be in [0, 1) (the share of a rollout the expert may drive first), got {self.dagger_roll_in}")
        if self.device not in ("cpu", "cuda"):
            raise invalid(f"a pretrain recipe's device is cpu or cuda, got {self.device!r}")
        if self.bf16 and self.device != "cuda":
            raise invalid("--bf16 autocast runs on a GPU only; drop --bf16 or use --device cuda")
        from retain.sim.settings import get_setting

        for name in (self.setting, self.dagger_setting or self.setting):
            get_setting(name)  # an unknown name fails here, not after collecting or a first stage's training

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PretrainRecipe":
        """The recipe of a named preset (see PRESETS: "tiny", "default", "minilm"), with overrides (None means keep)."""
        from retain import sim
        from retain.policies import get_policy

        if name not in PRESETS:
            raise invalid(f"unknown pretrain config {name!r}; use one of {', '.join(PRESETS)}")
        p = dict(PRESETS[name])
        base_cfg = {"image_size": sim.IMAGE_SIZE, "state_dim": sim.STATE_DIM, "action_dim": sim.ACTION_DIM}
        cfg = get_policy(POLICY).config({**base_cfg, **p.pop("policy_config")}).to_dict()
        p.update({k: v for k, v in overrides.items() if v is not None})
        return cls(config=name, policy_config=cfg, **p)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainRecipe":
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["continuations"] = [dataclasses.asdict(c) for c in self.continuations]
        for key in ("compile", "continuations"):  # recipes made before the option keep their bytes
            if not d[key]:
                del d[key]
        return d

    def stages(self) -> list[str]:
        """The training stages in order: cloning, the DAgger stage, then each continuation."""
        return ["bc"] + ["dagger"] * bool(self.dagger_episodes) + [f"continue{i}" for i in range(1, len(self.continuations) + 1)]


@dataclasses.dataclass
class PretrainResult:
    weights_dir: Path
    recipe: PretrainRecipe
    report: TrainReport
    frames: int
    collect_seconds: float
