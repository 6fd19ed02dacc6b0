"""Database engine, transactions and schema migrations.

SQLite writers are serialised with `BEGIN IMMEDIATE` (plus a busy timeout), so two processes
committing at once queue instead of failing with "database is locked"; readers use plain
deferred transactions and WAL, so queries never wait on a writer. On PostgreSQL the ref row is
locked with SELECT ... FOR UPDATE inside the commit transaction (see refs.py).
"""
from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from registry.config import SCHEMA_HEAD, SQLITE_BUSY_S, redact, unreachable_message  # noqa: F401  (SCHEMA_HEAD: db.SCHEMA_HEAD)
from registry.errors import invalid, unavailable

SQLITE_BUSY_MS = int(SQLITE_BUSY_S * 1000)
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
            _sqlite_transactions(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as e:
        raise invalid(f"database URL {redact(url)!r} is not usable ({e}); pass an SQLAlchemy URL such as sqlite:///path/registry.db") from None
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite opens transactions lazily and on its own terms; take that over so a writer can
    # say BEGIN IMMEDIATE (reserve the write lock up front, wait up to the busy timeout).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        _use_wal(cur)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("registry_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cur) -> None:
    # WAL lets readers run beside a writer; the setting sticks to the file after the first time.
    # Switching needs a lock that SQLite does not wait for (the busy timeout does not apply), so
    # a process opening a new file while another writes to it retries instead of failing.
    deadline = time.monotonic() + SQLITE_BUSY_S
    while cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return  # done, or a database (in memory) that cannot use WAL and says so
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    try:
        with Session(engine, expire_on_commit=False) as s:
            yield s
    except OperationalError as e:  # the server went away mid-query
        raise unavailable(_unreachable(engine, e)) from None


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One write transaction: commits on success, rolls back on any exception."""
    with engine.connect().execution_options(registry_write=True) as conn:
        with Session(bind=conn, expire_on_commit=False) as s:
            with s.begin():
                yield s


def current_revision(engine: Engine) -> Optional[str]:
    """The Alembic revision the database is at, None if it holds no registry schema."""
    try:
        with engine.connect() as conn:
            has = conn.dialect.has_table(conn, "alembic_version")
            if not has:
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as e:
        raise unavailable(_unreachable(engine, e)) from None


def _unreachable(engine: Engine, e: Exception) -> str:
    return unreachable_message(str(engine.url), getattr(e, "orig", None) or e)


def alembic_config(engine: Engine):
    """An Alembic Config built in code, so migrations run from an installed package too."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", str(engine.url).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def revisions() -> list[str]:
    """The schema's revisions, oldest first."""
    from alembic.script import ScriptDirectory

    return [s.revision for s in reversed(list(ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()))]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` ("head" or one of revisions()); never down.

    An unknown revision, or one older than the database's (a downgrade), is one INVALID line.
    """
    from alembic import command

    known = revisions()
    target = known[-1] if revision == "head" else revision
    if target not in known:
        raise invalid(f"unknown schema revision {revision!r}; known: {', '.join(known)} (head is {known[-1]})")
    current = current_revision(engine)
    if current in known and known.index(target) < known.index(current):
        raise invalid(f"the database is at schema {current}, newer than {target}; `db upgrade` never goes back "
                      f"(restore a backup taken at {target} instead)")
    try:
        command.upgrade(alembic_config(engine), target)
    except OperationalError as e:
        raise unavailable(_unreachable(engine, e)) from None


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
