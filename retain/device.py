"""Which torch device a run trains or evaluates on: `--device auto|cpu|cuda[:N]`.

`auto` is the first CUDA GPU when torch sees one, else the CPU. What a recipe records is the
device's kind ("cpu" or "cuda"): the arithmetic differs between them, not between two GPUs of one
machine, and a replay on another kind says so (retain.provenance.runtime_changes).

Example:
    >>> resolve_device("auto")          # "cuda:0" (torch's current GPU) on a machine with one, else "cpu"
    >>> device_kind(resolve_device("cuda:1"))
    'cuda'
"""
from __future__ import annotations

import re

from registry.errors import invalid

DEVICE_HELP = "auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N."
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | None) -> str:
    """'cpu' or 'cuda:N' for a `--device` value (None means auto); refuses an unknown name and a
    GPU that torch does not see, before anything is read or written."""
    text = (spec or "auto").strip().lower()
    m = _SPEC.match(text)
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise invalid(f"unknown device {spec!r}; use {DEVICE_HELP}")
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "auto" and not count:
        return "cpu"
    if not count:
        raise invalid(f"--device {spec} asks for a GPU but torch sees none (torch {torch.__version__}, "
                      f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
    if index >= count:
        raise invalid(f"--device {spec}: torch sees {count} GPU(s), numbered 0 to {count - 1}; pick one of those")
    return f"cuda:{index if m.group(2) is not None else torch.cuda.current_device()}"  # no number: torch's current GPU


def device_kind(device: str) -> str:
    """'cpu' or 'cuda': what a recipe records."""
    return device.split(":", 1)[0]


def device_name(device: str) -> str:
    """What the arithmetic runs on, for a runtime record: 'cpu' or 'cuda NVIDIA H200'."""
    if device_kind(device) == "cpu":
        return "cpu"
    import torch

    return f"cuda {torch.cuda.get_device_name(torch.device(device))}"


def check_bf16(device: str, bf16: bool) -> None:
    """bf16 autocast is a CUDA option; on a CPU it would only slow the run and change its bytes."""
    if bf16 and device_kind(device) != "cuda":
        raise invalid("--bf16 autocast runs on a GPU only; drop --bf16 or use --device cuda")


def select_device(spec: str | None) -> str:
    """A command's `--device`: resolved (refusing what torch cannot do), a GPU made torch's current
    one so "cuda" means it from here on, and the kind a recipe records returned."""
    actual = resolve_device(spec)
    if actual != "cpu":
        import torch

        torch.cuda.set_device(torch.device(actual))
    return device_kind(actual)
