"""Pretraining the generalist: collect expert demos of every pretraining task, train by BC.

A `PretrainRecipe` holds everything that decides the weights (data scale, steps, seed, threads,
policy config); `pretrain(recipe)` replays it to the same bytes. The default base ships in
`retain/assets/` (weights + `base.json` with its recipe and weight hash) so users and the
`learn` loop need not spend the pretraining time; `python cli.py pretrain` with the recorded
recipe reproduces it.

Example:
    >>> recipe = PretrainRecipe.preset("tiny", seed=1)
    >>> result = pretrain(recipe, Path("out/base"))
    >>> result.weights_dir, result.report.final_loss
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import corrupt, invalid
from retain.train import DemoFrames, TrainReport

POLICY = "builtin-vla"
ASSETS = Path(__file__).parent / "assets"
SHIPPED_BASE = ASSETS / "base"
SHIPPED_MANIFEST = ASSETS / "base.json"
RECIPE_VERSION = 1  # bump when pretraining code changes what a recipe produces

# Named sizes: `policy_config` overrides of the builtin VLA config plus the data/optimisation scale.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for tests and smoke runs
    "tiny": {
        "policy_config": {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
                          "vision_channels": 16, "vocab_size": 512, "chunk": 4, "execute": 2},
        "episodes": 24, "steps": 20, "lr": 1e-3, "batch_size": 16,
    },
    # the shipped default base (<= 30 min on a 2-core CPU)
    "default": {
        "policy_config": {},
        "episodes": 4000, "steps": 6000, "lr": 5e-4, "batch_size": 64,
    },
}


@dataclasses.dataclass
class PretrainRecipe:
    """Everything that determines a pretrained base's bytes."""

    config: str = "default"  # the preset the recipe started from (documentation only)
    policy: str = POLICY
    policy_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # full, resolved config
    episodes: int = 4000  # generalist expert episodes collected (spread over all pretraining tasks)
    steps: int = 6000
    lr: float = 5e-4
    batch_size: int = 64
    seed: int = 0  # seeds data collection, initialisation and batch order
    threads: int = 2  # torch threads: part of the recipe because it can change float rounding
    setting: str = "pretrain"  # simulator setting the demos come from
    recipe_version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise invalid(f"--episodes must be at least 1, got {self.episodes}")
        if self.steps < 1:
            raise invalid(f"--steps must be at least 1, got {self.steps}")
        if self.seed < 0:
            raise invalid(f"--seed must be >= 0, got {self.seed}")
        if self.threads < 1:
            raise invalid(f"threads must be at least 1, got {self.threads}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PretrainRecipe":
        """The recipe of a named preset ("tiny" or "default"), with overrides (None means keep)."""
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
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PretrainResult:
    weights_dir: Path
    recipe: PretrainRecipe
    report: TrainReport
    frames: int
    collect_seconds: float


def collect_frames(tasks: list[str], setting: str, episodes: int, seed: int, batch_size: int = 256) -> DemoFrames:
    """Expert demos: `episodes` episodes cycling over `tasks`, run in batches; failed ones are dropped.

    Batch `b` uses seed `seed * 1_000_003 + b`, so the data depend only on (tasks, setting,
    episodes, seed, batch_size).
    """
    from retain import sim

    parts: list[dict[str, np.ndarray]] = []
    tasks_seen: dict[str, int] = {}
    next_ep = 0
    for b, start in enumerate(range(0, episodes, batch_size)):
        n = min(batch_size, episodes - start)
        names = [tasks[(start + i) % len(tasks)] for i in range(n)]
        env = sim.TabletopBatch(names, setting, n, seed * 1_000_003 + b)
        obs = env.reset()
        instr = [tasks_seen.setdefault(s, len(tasks_seen)) for s in env.instructions]
        live = np.ones(n, bool)
        success = np.zeros(n, bool)
        rows: list[tuple[np.ndarray, ...]] = []
        for _ in range(max(sim.max_steps(t) for t in set(names))):
            if not live.any():
                break
            act = env.expert_actions().astype(np.float32)
            idx = np.flatnonzero(live)
            rows.append((idx, obs["image"][idx].copy(), obs["state"][idx].copy(), act[idx].copy()))
            obs, succ, done = env.step(np.where(live[:, None], act, 0.0).astype(np.float32))
            success |= np.asarray(succ, bool) & live
            live &= ~np.asarray(done, bool)
        ep = np.concatenate([r[0] for r in rows])
        order = np.argsort(ep, kind="stable")  # frames grouped by episode, in time order
        keep = success[ep[order]]
        sel = order[keep]
        local = ep[sel]
        _, renum = np.unique(local, return_inverse=True)
        parts.append({
            "images": np.concatenate([r[1] for r in rows])[sel],
            "state": np.concatenate([r[2] for r in rows])[sel],
            "action": np.concatenate([r[3] for r in rows])[sel],
            "episode_index": renum + next_ep,
            "task_index": np.asarray(instr, np.int64)[local],
        })
        next_ep += int(renum.max()) + 1 if len(renum) else 0
    tasks_list = sorted(tasks_seen, key=tasks_seen.get)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return DemoFrames(tasks=tasks_list, **cat)


def pretrain(recipe: PretrainRecipe, dest: Path, progress: bool = False) -> PretrainResult:
    """Collect generalist demos, train the policy from scratch, save it to the new folder `dest`."""
    from retain import sim
    from retain.policies import get_policy
    from retain.train import deterministic_torch, train_bc

    adapter = get_policy(recipe.policy)
    t0 = time.perf_counter()
    data = collect_frames(list(sim.PRETRAIN_TASKS), recipe.setting, recipe.episodes, recipe.seed)
    collect_s = time.perf_counter() - t0
    if len(data) == 0:
        raise invalid("the experts produced no successful pretraining episode; check the simulator")
    with deterministic_torch(recipe.threads):
        model = adapter.build(recipe.policy_config, seed=recipe.seed)
    report = train_bc(model, adapter, data, recipe.steps, recipe.lr, recipe.batch_size, recipe.seed,
                      threads=recipe.threads, progress=progress)
    adapter.save(model, dest)
    return PretrainResult(Path(dest), recipe, report, len(data), collect_s)


def version_config(recipe: PretrainRecipe) -> dict[str, Any]:
    """The `config` a registry version stores: what rebuilds the model."""
    return {"policy": recipe.policy, "policy_config": recipe.policy_config}


@dataclasses.dataclass
class ShippedBase:
    weights_dir: Path
    config: dict[str, Any]  # {"policy": ..., "policy_config": ...}
    recipe: PretrainRecipe
    weight_hash: str
    metrics: dict[str, Any]


def shipped_base() -> ShippedBase:
    """The default base that ships in retain/assets, checked against its recorded hash."""
    from registry.checkpoint import open_checkpoint, weight_hash

    if not SHIPPED_MANIFEST.exists() or not SHIPPED_BASE.exists():
        raise corrupt(f"the shipped base is missing from {ASSETS}; reinstall the package or run `retain pretrain`")
    manifest = json.loads(SHIPPED_MANIFEST.read_text())
    with open_checkpoint(SHIPPED_BASE) as ckpt:
        actual = weight_hash(ckpt)
    if actual != manifest["weight_hash"]:
        raise corrupt(f"the shipped base in {SHIPPED_BASE} has hash {actual}, not the recorded {manifest['weight_hash']}; reinstall the package")
    return ShippedBase(SHIPPED_BASE, manifest["config"], PretrainRecipe.from_dict(manifest["recipe"]), actual, manifest.get("metrics", {}))
