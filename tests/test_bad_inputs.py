"""A corpus of bad inputs, by class (issue 26): each gets one `Error:` line, its exit code, and
leaves the registry as it was (verify clean, no rows, no store files, no work or temp folders).

Each class is one list and one test, so `python -m pytest -q tests/test_bad_inputs.py -rA`
shows how many inputs each class holds (see docs/hardening.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bad_input_kit import assert_one_line_error, assert_unchanged, private_tmp, state  # noqa: F401 (fixture)
from registry.errors import Code
from test_checkpoint_conformance import HAND, S1, S2, _ours, _shards



@pytest.fixture
def populated(registry, make_checkpoint, cli, private_tmp):
    assert cli("base", "import", str(make_checkpoint("base.safetensors", seed=0)), "--name", "tiny").exit_code == 0
    return registry


def _refused_hand_cases(tmp_path: Path) -> list[Path]:
    out = []
    for name, blob in HAND:
        path = tmp_path / "corpus" / name / "model.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(blob)
        if not _ours(path)[0] or name in ("empty-header", "empty-header-padded", "only-metadata"):
            out.append(path)
    return out


def safetensors_corpus(tmp_path: Path) -> list[Path]:
    """Every hand-written malformed header of the conformance corpus, empty headers, bad indexes."""
    out = _refused_hand_cases(tmp_path)
    for i, wm in enumerate([{"a": S1, "b": S1, "c": S2, "d": S1}, {"a": S1, "b": S2, "c": S2}, {"a": S1, "c": S2}, {"a": 1}]):
        out.append(_shards(tmp_path / f"index{i}", wm))
    return out


def test_safetensors_conformance_at_base_import(populated, cli, tmp_path):
    corpus = safetensors_corpus(tmp_path)
    assert len(corpus) >= 50
    before = state(populated)
    for path in corpus:
        assert_one_line_error(cli("base", "import", str(path)), Code.INVALID_VALUE, str(path.parent.name))
    assert_unchanged(populated, before)
