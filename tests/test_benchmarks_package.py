"""benchmarks/ is a package: every script imports as `benchmarks.NAME` (run as `python -m benchmarks.NAME`
from the repository root) and none edits sys.path to find its siblings or the libraries."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# runs inside lerobot's own virtual environment, by path, and imports nothing of ours
OUTSIDE = {"lerobot_compat_child"}
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__" and p.stem not in OUTSIDE)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_imports_as_a_module_of_the_package(name):
    source = (BENCHMARKS / f"{name}.py").read_text()
    assert "sys.path.insert(0, str(Path(__file__)" not in source and "sys.path.insert(0, str(ROOT))" not in source
    importlib.import_module(f"benchmarks.{name}")
