"""The policy adapter protocol: what the trainer, the evaluator and `learn` need from a policy.

An adapter is a small object that knows how to build, load and save one kind of policy, which
merge partition preset its parameter names follow, its behaviour-cloning loss, and how to act.
Outside policies implement it and register through the entry-point group "retain.policies"
(see retain/policies/__init__.py).

Batches passed to `loss` are dicts keyed by the constants below:
    IMAGE          uint8 (B, H, W, 3)
    STATE          float32 (B, S)
    INSTRUCTION    list[str] of length B
    ACTION         float32 (B, K, A): the demonstrated chunk of the next K actions
    ACTION_IS_PAD  bool (B, K): True where the chunk runs past the episode's end
    TARGET         float32 (B, 4), optional: where the instructed thing and its destination are
                   (table x, y of each); only simulator pretraining data carries it, and a
                   policy may ignore it
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from registry.errors import already_exists, invalid, not_found

if TYPE_CHECKING:  # torch stays out of import time
    import torch

IMAGE = "observation.image"
STATE = "observation.state"
INSTRUCTION = "instruction"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TARGET = "observation.target"

WEIGHTS_NAME = "model.safetensors"


@runtime_checkable
class PolicyAdapter(Protocol):
    name: str
    """The name the policy is registered under (stored in every version's config)."""
    partition_preset: str
    """Name of the merge partition preset its parameter names follow (retain.partitions)."""

    def build(self, config: Mapping[str, Any], seed: int = 0) -> "torch.nn.Module":
        """A freshly initialised model; `seed` fixes the initialisation."""

    def load(self, checkpoint_dir: str | Path, config: Mapping[str, Any]) -> "torch.nn.Module":
        """The model with weights read from safetensors (never pickle)."""

    def save(self, model: "torch.nn.Module", dest: str | Path) -> Path:
        """Write F32 safetensors into the new folder `dest`; returns it."""

    def execute_steps(self, model: "torch.nn.Module") -> int:
        """How many actions of each predicted chunk are executed before the next prediction."""

    def loss(self, model: "torch.nn.Module", batch: Mapping[str, Any]) -> tuple["torch.Tensor", dict[str, Any]]:
        """Behaviour-cloning loss on a batch (keys above, on the model's device) and a dict of
        values to log (floats or detached 0-dim tensors: the trainer does not read them every step).

        An adapter may also define `encode_instructions(model, instructions) -> {key: tensor (n, ...)}`:
        the trainer then encodes each distinct instruction once and adds those keys to every batch,
        gathered per frame, so the loss need not tokenize the same words every step."""

    def act_chunk(self, model: "torch.nn.Module", obs: Mapping[str, np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """Actions (n, execute_steps, A) in [-1, 1] for n observations {"image", "state"}: one forward pass."""

    def act(self, model: "torch.nn.Module", obs: Mapping[str, np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """The next action (n, A) for each observation."""


def save_state_dict(model: "torch.nn.Module", dest: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Save every parameter and buffer as F32 safetensors in a new folder `dest` (atomically)."""
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.exists():
        raise already_exists(f"output {dest} already exists; choose a new path or remove it first")
    if not dest.parent.exists():
        raise not_found(f"output folder {dest.parent} does not exist; create it first")
    tensors = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", **dict(metadata or {})})
        tmp.rename(dest)
    except BaseException:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        raise
    return dest


def load_state_dict(model: "torch.nn.Module", checkpoint: str | Path) -> "torch.nn.Module":
    """Fill `model` from a safetensors file or folder (sharded too); names and shapes must match exactly."""
    import torch

    from registry.checkpoint import open_checkpoint

    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    expected = model.state_dict()
    with open_checkpoint(checkpoint) as ckpt:
        missing = sorted(set(expected) - set(ckpt.specs))
        extra = sorted(set(ckpt.specs) - set(expected))
        if missing or extra:
            raise invalid(
                f"checkpoint {checkpoint} does not fit this policy config: missing {missing[:5]}, unexpected {extra[:5]}; "
                "load it with the config it was saved with"
            )
        loaded = {}
        for name, ref in expected.items():
            spec = ckpt.specs[name]
            if tuple(spec.shape) != tuple(ref.shape):
                raise invalid(f"tensor {name} has shape {list(spec.shape)} in {checkpoint} but the config needs {list(ref.shape)}")
            if spec.dtype not in dtypes:
                raise invalid(f"tensor {name} in {checkpoint} has dtype {spec.dtype}; expected a float dtype")
            raw = torch.frombuffer(bytearray(ckpt.read(name)), dtype=dtypes[spec.dtype]).reshape(spec.shape)
            loaded[name] = raw.to(ref.dtype)
    model.load_state_dict(loaded)
    return model

