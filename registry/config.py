"""Where a registry lives (its home folder, database URL and blob store URL), and the database
settings both of its front doors (`registry.api`, `registry.reader`) share.

Explicit arguments win over RETAIN_HOME / RETAIN_DB_URL / RETAIN_STORE_URL, which win over the
defaults: home `./.retain`, database `sqlite:///HOME/registry.db`, store `HOME/store`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from registry.errors import first_line, not_found

DEFAULT_HOME = ".retain"
DB_FILE = "registry.db"
STORE_DIR = "store"

# The newest migration. Queries run without Alembic when the database is already here; anything
# else goes through Registry.open, which upgrades. tests/test_registry_migrations.py checks this
# equals Alembic's head.
SCHEMA_HEAD = "0006"
SQLITE_BUSY_S = 30.0  # a connection waits out a writer's checkpoint this long, never fails at once


@dataclasses.dataclass(frozen=True)
class Locations:
    home: Path
    db_url: str
    store_url: str

    @property
    def sqlite_path(self) -> Optional[Path]:
        """The database file when the database is a local SQLite file, else None."""
        prefix = "sqlite:///"
        if self.db_url.startswith(prefix) and ":memory:" not in self.db_url:
            return Path(self.db_url[len(prefix):].split("?", 1)[0])
        return None


def resolve_locations(home: Optional[str] = None, db_url: Optional[str] = None, store_url: Optional[str] = None) -> Locations:
    home_path = Path(home or os.environ.get("RETAIN_HOME") or DEFAULT_HOME).expanduser().absolute()
    db = db_url or os.environ.get("RETAIN_DB_URL") or f"sqlite:///{home_path / DB_FILE}"
    store = store_url or os.environ.get("RETAIN_STORE_URL") or str(home_path / STORE_DIR)
    return Locations(home_path, db, store)


def redact(url: str) -> str:
    """A database URL safe to print: the password, if any, is masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def require_registry_file(loc: Locations) -> None:
    """NOT_FOUND (saying how to make one) when the registry is a SQLite file that does not exist."""
    path = loc.sqlite_path
    if path is not None and not path.exists():
        raise not_found(f"no registry at {loc.home if path.parent == loc.home else path}; run `retain init` (or pass --home / RETAIN_HOME)")


def unreachable_message(url: str, exc: BaseException) -> str:
    """The one line for a database that cannot be reached; `exc` is the driver's error."""
    return f"cannot reach database {redact(url)}: {first_line(exc)}; check --db / RETAIN_DB_URL and that the server is running"
