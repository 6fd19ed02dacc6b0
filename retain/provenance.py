"""What besides a recipe decides a run's bytes: our code's version and the numeric runtime.

The same recipe, code and seed give the same weights bit for bit only on the same arithmetic:
torch and numpy releases change kernels and the simulator's float paths, and torch dispatches
its CPU kernels by instruction set (AVX2, AVX512, ...), whose sums round differently. Recording
all of it beside every learn run lets a replay that differs say which of these changed, instead
of leaving the user to guess.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit (and '+dirty') when running from a checkout."""
    from importlib import metadata

    try:
        version = metadata.version("retain-registry")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0 and sha.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "retain", "registry"],
                                   capture_output=True, text=True, timeout=5)
            return f"{version}+git.{sha.stdout.strip()}" + (".dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def runtime(device: str = "cpu") -> dict[str, str]:
    """The numeric runtime: Python, torch, numpy, the CPU instruction set torch dispatches to, and
    the CPU model (two AVX512 machines of different models gave one DAgger stage different bytes:
    the math libraries pick kernels by model, not only by instruction set); for a run on a GPU
    also `device`, e.g. "cuda NVIDIA H200" (a CPU run records none, as runs did before devices)."""
    if device.split(":", 1)[0] == "cpu":
        return dict(_cpu_runtime())
    from retain.device import device_name

    return {**_cpu_runtime(), "device": device_name(device if ":" in device else device + ":0")}


@functools.lru_cache(maxsize=1)
def _cpu_runtime() -> dict[str, str]:
    import numpy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model()}


def cpu_model(cpuinfo: str | None = None) -> str:
    """'GenuineIntel 6/207' (vendor, family/model) from /proc/cpuinfo; virtual machines often
    report only a generic model name, the numbers still tell CPUs apart. Elsewhere, the platform's name."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    if "vendor_id" in fields and "cpu family" in fields and "model" in fields:
        return f"{fields['vendor_id']} {fields['cpu family']}/{fields['model']}"
    return fields.get("model name") or fields.get("CPU part") or platform.processor() or platform.machine()


def runtime_changes(recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None = None) -> str:
    """'numpy 2.3.1 -> 2.4.6, cpu AVX512 -> AVX2': what differs from a recorded runtime ('' when
    nothing does, or when the record predates runtimes being recorded)."""
    if not recorded:
        return ""
    current = runtime() if current is None else current
    was = {**recorded, "device": recorded.get("device", "cpu")}  # a record without one ran on the CPU
    now = {**current, "device": current.get("device", "cpu")}
    return ", ".join(f"{k} {was[k]} -> {now.get(k, '?')}" for k in sorted(was) if was[k] != now.get(k))
