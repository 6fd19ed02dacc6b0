"""Shared fixtures: registries on SQLite and PostgreSQL, tiny checkpoints, and a CLI runner.

`db_url` is parametrised over a temporary SQLite file and a throw-away PostgreSQL database on
127.0.0.1:5432 (user postgres), created per test and dropped after. Without a reachable server
the postgres cases are skipped locally and FAIL when the CI variable is set, so CI always proves
both backends.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Evaluations run in this process unless a test asks for workers: the tests' evaluations are a few
# episodes of tiny models, where starting a worker (importing torch) costs more than it saves.
# tests/test_eval_pool.py and the learn tests that name workers cover the parallel path.
os.environ.setdefault("RETAIN_EVAL_WORKERS", "1")

PG_SERVER = os.environ.get("RETAIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_ADMIN_DB = "test"


def _pg_conninfo(db: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(f"{PG_SERVER}/{db}")
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={db} connect_timeout=3"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_conninfo(PG_ADMIN_DB), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL (without database), or skip (locally) / fail (CI) if unreachable."""
    try:
        _pg_admin("SELECT 1")
    except Exception as e:  # any failure to connect means "no server here"
        msg = f"PostgreSQL at {PG_SERVER} is unreachable ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI requires it (start it, see .ci/run)")
        pytest.skip(msg)
    return PG_SERVER


@pytest.fixture
def postgres_url(postgres_server: str) -> Callable:
    """Yields a URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"retain_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_server}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def registry(db_url: str, tmp_path: Path):
    """An initialised, empty Registry on each database backend, its store under tmp_path."""
    from registry.api import Registry

    reg = Registry.open(home=str(tmp_path / "home"), db_url=db_url, store_url=str(tmp_path / "store"), create=True)
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def sqlite_registry(tmp_path: Path):
    """The same on SQLite only, for tests of other parts that need a registry but not both backends."""
    from registry.api import Registry

    reg = Registry.open(home=str(tmp_path / "home"), create=True)
    try:
        yield reg
    finally:
        reg.close()


def tiny_tensors(seed: int = 0, scale: float = 1.0) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """A few small tensors named like the built-in policy's (vision.*, language.*, action.*)."""
    rng = np.random.default_rng(seed)
    shapes = {"vision.conv.weight": (4, 3, 3, 3), "language.embed.weight": (16, 8), "action.head.weight": (7, 8),
              "action.head.bias": (7,)}
    return {n: ("F32", s, (rng.standard_normal(s) * scale).astype("<f4").tobytes()) for n, s in shapes.items()}


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """make_checkpoint(name, seed=0, shard_bytes=None) -> path of a new tiny safetensors file/folder."""
    from registry.checkpoint import save_tensors

    def make(name: str = "ckpt.safetensors", seed: int = 0, shard_bytes: int | None = None) -> Path:
        dest = tmp_path / "checkpoints" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        return save_tensors(dest, tiny_tensors(seed), max_shard_bytes=shard_bytes)

    return make


@pytest.fixture
def cli(registry):
    """cli("lineage", "--json") runs the CLI in-process against the `registry` fixture's locations."""
    from click.testing import CliRunner

    from cli import cli as root

    loc = registry.locations
    runner = CliRunner()

    def run(*args: str):
        argv = ["--home", str(loc.home), "--db", loc.db_url, "--store", loc.store_url, *args]
        return runner.invoke(root, argv, catch_exceptions=False)

    return run


def cli_argv(registry, *args: str) -> list[str]:
    """argv for running the CLI as a subprocess against `registry`'s locations."""
    loc = registry.locations
    return [sys.executable, str(ROOT / "cli.py"), "--home", str(loc.home), "--db", loc.db_url, "--store", loc.store_url, *args]
