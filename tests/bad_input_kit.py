"""What the bad-input tests assert: one `Error:` line, the kind's exit code, and nothing changed.

`state(registry)` is everything a bad input could leave behind: the lineage, ref log and scores a
user sees, the row count of every table, the files of the blob store (names and modes), the
registry's work folders and `retain-*` folders in the system temp dir. `assert_unchanged` also
runs `verify`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from registry.errors import Code


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A system temp dir of the test's own, so other processes' `retain-*` folders do not count."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def assert_one_line_error(result, code: Code, *needles: str) -> None:
    out = result.output
    assert result.exit_code == code.value, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    for n in needles:
        assert n in lines[0], out


def overwrite_blob(path: str | os.PathLike, data: bytes) -> None:
    """Damage a stored blob as a failing disk or a careless user would: blob files are read-only."""
    os.chmod(path, 0o644)
    Path(path).write_bytes(data)


def snapshot(registry) -> tuple:
    """Everything a user could see change: versions, refs, ref log, scores, store files."""
    store = Path(registry.locations.store_url)
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    lin = registry.lineage()
    return (lin, registry.log(None), [registry.scores(v.name) for v in lin.versions], files)


def _row_counts(registry) -> dict[str, int]:
    from sqlalchemy import func, select

    from registry.models import Base

    with registry.engine.connect() as c:
        return {t.name: c.execute(select(func.count()).select_from(t)).scalar() for t in Base.metadata.sorted_tables}


def temp_folders() -> list[str]:
    return sorted(p for p in os.listdir(tempfile.gettempdir()) if p.startswith("retain-"))


def state(registry) -> tuple:
    home = Path(registry.locations.home)
    work = sorted(os.listdir(home / "work")) if (home / "work").is_dir() else []
    return snapshot(registry), _row_counts(registry), work, temp_folders()


def assert_unchanged(registry, before: tuple) -> None:
    assert state(registry) == before
    report = registry.verify()
    assert report.ok, report.problems
