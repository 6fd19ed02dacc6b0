"""The registry's queries (lineage, log, scores, show, head, resolve) in plain SQL over a DB-API
connection: the one implementation both front doors use.

- `open_reader()` is the lean read path of the query commands: it connects with the driver alone
  (stdlib sqlite3, or psycopg for postgresql+psycopg URLs), so a `retain lineage` process never
  imports SQLAlchemy (about half a second of a one-second answer). It is used only when the
  database is already at this code's schema; otherwise it returns None and the caller (the CLI's
  `reader_from_ctx`) opens `registry.api.Registry`, which migrates (or says why it cannot).
- `registry.api.Registry` runs the same query functions on a raw connection of its SQLAlchemy
  engine (or of its write transaction), so both return the same `registry.records` dataclasses.

Example:
    >>> from registry.reader import open_reader
    >>> with open_reader(home="./.retain") as reg:  # None: not at this code's schema; use Registry.open
    ...     print(reg.lineage().refs, reg.scores("main"))
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from registry.config import SCHEMA_HEAD, SQLITE_BUSY_S, Locations, require_registry_file, resolve_locations, unreachable_message
from registry.errors import invalid, not_found, unavailable
from registry.evaluations import shown_scores
from registry.records import (
    LearnRun, Lineage, LineageEdge, RefLogEntry, Score, StoredFile, Version, VersionDetail,
)

LEAN_POSTGRES_SCHEME = "postgresql+psycopg"
_MAX_INT = 2**31 - 1  # versions.number is a 32-bit integer; a bigger "v<N>" cannot exist

T = TypeVar("T")


def as_utc(t: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """An aware UTC datetime (SQLite hands back naive UTC wall times, PostgreSQL its session zone)."""
    if t is None:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


class Db:
    """A DB-API connection plus what differs between drivers: how parameters are spelled, whether
    JSON and timestamps arrive decoded, and which exception means the server went away.

    Queries are written with `?` placeholders.
    """

    def __init__(self, conn: Any, dialect: str, url: str, driver: Any):
        self.conn = conn
        self.dialect = dialect
        self.url = url
        self.driver = driver
        self._style = driver.paramstyle
        self._unreachable = driver.OperationalError
        self._json_decoded = dialect == "postgresql"  # psycopg loads json columns itself

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        sql, args = self._spell(sql, params)
        cur = self.conn.cursor()
        try:
            if args:
                cur.execute(sql, args)
            else:
                cur.execute(sql)
            return cur.fetchall()
        except self._unreachable as e:  # the server went away, or SQLite stayed locked
            raise unavailable(unreachable_message(self.url, e)) from None
        finally:
            cur.close()

    def execute(self, sql: str) -> None:
        """A statement that returns no rows."""
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
        except self._unreachable as e:
            raise unavailable(unreachable_message(self.url, e)) from None
        finally:
            cur.close()

    def row(self, sql: str, params: Sequence[Any] = ()) -> Optional[tuple]:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        r = self.row(sql, params)
        return None if r is None else r[0]

    def json(self, v: Any) -> Any:
        # SQLite gives a JSON column NUMERIC affinity: a stored scalar such as alpha 0.75 comes back
        # as a number, containers as text (SQLAlchemy's JSON type decodes the same way).
        return json.loads(v) if isinstance(v, str) and not self._json_decoded else v

    def when(self, v: Any) -> Optional[dt.datetime]:
        return as_utc(dt.datetime.fromisoformat(v) if isinstance(v, str) else v)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent view for a query made of several selects; writes nothing."""
        if self.dialect == "sqlite":  # the connection is in autocommit mode: BEGIN is ours
            self.execute("BEGIN")
        else:
            self.conn.rollback()  # end any transaction a pool's liveness ping left open
            if self.dialect == "postgresql":
                self.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield
        finally:
            if self.dialect == "sqlite":
                self.execute("ROLLBACK")
            else:
                self.conn.rollback()

    def _spell(self, sql: str, params: Sequence[Any]) -> tuple[str, Any]:
        if self._style == "qmark" or not params:
            return sql, tuple(params)
        if self._style in ("format", "pyformat"):
            return sql.replace("?", "%s"), tuple(params)
        pieces = sql.split("?")
        if self._style == "numeric":
            return pieces[0] + "".join(f":{i}{p}" for i, p in enumerate(pieces[1:], 1)), tuple(params)
        assert self._style == "named", self._style
        return pieces[0] + "".join(f":p{i}{p}" for i, p in enumerate(pieces[1:], 1)), {f"p{i}": v for i, v in enumerate(params, 1)}


# ------------------------------------------------------------------------------------ queries

_VERSION_COLUMNS = ("v.id, v.number, p.number, v.weight_hash, v.how, v.config, v.recipe, v.message, v.created_at "
                    "FROM versions v LEFT JOIN versions p ON p.id = v.parent_id")


def _version(db: Db, r: tuple, refs: Sequence[str]) -> Version:
    _, number, parent, weight_hash, how, config, recipe, message, created_at = r
    return Version(name=f"v{number}", number=number, parent=None if parent is None else f"v{parent}",
                   weight_hash=weight_hash, how=how, created_at=db.when(created_at), config=db.json(config) or {},
                   recipe=db.json(recipe) or {}, message=message or "", refs=tuple(refs))


def _v(number: Optional[int]) -> Optional[str]:
    return None if number is None else f"v{number}"


def known_refs(db: Db) -> str:
    """The ref names, for messages: " (refs: a, main)" or " (no refs yet)"."""
    names = [r[0] for r in db.rows("SELECT name FROM refs ORDER BY name")]
    return f" (refs: {', '.join(names)})" if names else " (no refs yet)"


def resolve_id(db: Db, spec: str) -> tuple[int, int]:
    """(id, number) of a version named "v3" or pointed at by a ref; NOT_FOUND saying what exists."""
    if not spec:
        raise invalid("no version given; name one like v3 or a ref like main")
    if spec[0] == "v" and spec[1:].isascii() and spec[1:].isdigit():
        number = int(spec[1:])
        r = db.row("SELECT id, number FROM versions WHERE number = ?", (number,)) if number <= _MAX_INT else None
        if r is None:
            latest = db.value("SELECT max(number) FROM versions")
            have = f"latest is v{latest}" if latest is not None else "the registry has no versions yet"
            raise not_found(f"version {spec} does not exist ({have}); see `retain lineage`")
        return r
    r = db.row("SELECT v.id, v.number FROM refs r JOIN versions v ON v.id = r.version_id WHERE r.name = ?", (spec,))
    if r is None:
        raise not_found(f"{spec!r} is neither a version (v0, v1, ...) nor a ref{known_refs(db)}; see `retain lineage`")
    return r


def version_by_id(db: Db, version_id: int) -> Version:
    r = db.row(f"SELECT {_VERSION_COLUMNS} WHERE v.id = ?", (version_id,))
    assert r is not None, version_id
    refs = [n for (n,) in db.rows("SELECT name FROM refs WHERE version_id = ? ORDER BY name", (version_id,))]
    return _version(db, r, refs)


def resolve(db: Db, spec: str) -> Version:
    return version_by_id(db, resolve_id(db, spec)[0])


def head(db: Db, ref: str = "main") -> Optional[Version]:
    vid = db.value("SELECT version_id FROM refs WHERE name = ?", (ref,))
    return None if vid is None else version_by_id(db, vid)


def lineage(db: Db) -> Lineage:
    rows = db.rows(f"SELECT {_VERSION_COLUMNS} ORDER BY v.number")
    ref_map: dict[int, list[str]] = {}
    ref_names: dict[str, str] = {}
    for name, number in db.rows("SELECT r.name, v.number FROM refs r JOIN versions v ON v.id = r.version_id ORDER BY r.name"):
        ref_map.setdefault(number, []).append(name)
        ref_names[name] = f"v{number}"
    # Only the columns an edge shows: decoding every run's recipe and sweep would double the time.
    runs = {rid: (skill, mode, alpha) for rid, skill, mode, alpha in db.rows(
        "SELECT l.result_id, s.name, l.mode, l.alpha FROM learn_runs l JOIN skills s ON s.id = l.skill_id ORDER BY l.id")}
    versions, edges = [], []
    for r in rows:
        v = _version(db, r, ref_map.get(r[1], ()))
        versions.append(v)
        if v.parent is not None:
            skill, mode, alpha = runs.get(r[0], (None, None, None))
            edges.append(LineageEdge(parent=v.parent, child=v.name, how=v.how, skill=skill, mode=mode, alpha=db.json(alpha)))
    return Lineage(versions=versions, edges=edges, refs=ref_names)


def log(db: Db, ref: Optional[str] = "main", limit: Optional[int] = None) -> list[RefLogEntry]:
    """Moves of `ref` (all refs if None), newest first; NOT_FOUND for a ref that does not exist."""
    sql = ("SELECT l.ref, o.number, n.number, l.action, l.reason, l.who, l.at FROM ref_log l "
           "LEFT JOIN versions o ON o.id = l.old_version_id LEFT JOIN versions n ON n.id = l.new_version_id")
    params: list[Any] = []
    if ref is not None:
        if db.row("SELECT 1 FROM refs WHERE name = ?", (ref,)) is None:
            raise not_found(f"ref {ref!r} does not exist{known_refs(db)}")
        sql += " WHERE l.ref = ?"
        params.append(ref)
    sql += " ORDER BY l.id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [RefLogEntry(ref=r, old=_v(o), new=_v(n), action=action, reason=reason, who=who, at=db.when(at))
            for r, o, n, action, reason, who, at in db.rows(sql, params)]


def _scores_of(db: Db, version_id: int, number: int, every: bool = True) -> list[Score]:
    rows = db.rows("SELECT s.id, k.name, s.split, s.successes, s.episodes, s.rate, s.ci_low, s.ci_high, s.evaluator, "
                   "s.seed, s.created_at FROM scores s LEFT JOIN skills k ON k.id = s.skill_id WHERE s.version_id = ?",
                   (version_id,))
    # Sorted here: databases disagree on where NULL (the generalist suite) sorts; it goes last.
    rows.sort(key=lambda r: (r[1] is None, r[1] or "", r[2], r[0]))
    out = [Score(version=f"v{number}", skill=skill, split=split, successes=successes, episodes=episodes, rate=rate,
                 ci_low=ci_low, ci_high=ci_high, evaluator=evaluator, created_at=db.when(at), seed=seed, id=sid)
           for sid, skill, split, successes, episodes, rate, ci_low, ci_high, evaluator, seed, at in rows]
    return out if every else shown_scores(out)


def scores(db: Db, version_or_ref: Optional[str] = None, every: bool = False) -> list[Score]:
    """Scores of a version (default: the head of main; [] if main does not exist yet): the shown
    evaluation of each (skill, split) (registry.evaluations), or with `every` each one recorded."""
    if version_or_ref is None:
        r = db.row("SELECT v.id, v.number FROM refs r JOIN versions v ON v.id = r.version_id WHERE r.name = 'main'")
        if r is None:
            return []
    else:
        r = resolve_id(db, version_or_ref)
    return _scores_of(db, *r, every=every)


_LEARN_RUN_SQL = ("SELECT l.id, k.name, p.number, res.number, l.demo_set_id, l.mode, l.recipe, l.delta, l.alpha, l.sweep, l.timings, "
                  "l.status, l.created_at FROM learn_runs l JOIN skills k ON k.id = l.skill_id "
                  "LEFT JOIN versions p ON p.id = l.parent_id LEFT JOIN versions res ON res.id = l.result_id")


def _learn_run(db: Db, r: tuple) -> LearnRun:
    rid, skill, parent, result, demo_set_id, mode, recipe, delta, alpha, sweep, timings, status, at = r
    return LearnRun(id=rid, skill=skill, parent=_v(parent), result=_v(result), demo_set_id=demo_set_id, mode=mode,
                    recipe=db.json(recipe), delta=f"sha256:{delta}" if delta else None, alpha=db.json(alpha),
                    sweep=db.json(sweep), timings=db.json(timings), status=status, created_at=db.when(at))


def learn_runs(db: Db) -> list[LearnRun]:
    return [_learn_run(db, r) for r in db.rows(_LEARN_RUN_SQL + " ORDER BY l.id")]


def show(db: Db, spec: str) -> VersionDetail:
    vid, number = resolve_id(db, spec)
    weights = db.value("SELECT weights FROM versions WHERE id = ?", (vid,))
    files = [StoredFile(p, b, s) for p, b, s in
             db.rows("SELECT path, blob, size FROM folder_files WHERE folder = ? ORDER BY path", (weights,))]
    run = db.row(_LEARN_RUN_SQL + " WHERE l.result_id = ? ORDER BY l.id LIMIT 1", (vid,))
    children = [f"v{n}" for (n,) in db.rows("SELECT number FROM versions WHERE parent_id = ? ORDER BY number", (vid,))]
    return VersionDetail(version=version_by_id(db, vid), files=files, learn_run=_learn_run(db, run) if run else None,
                         scores=_scores_of(db, vid, number, every=False), children=children)


# ------------------------------------------------------------------------------------ front doors


class Queries:
    """The query methods of a registry; `_read(query, *args)` runs one in a consistent snapshot.
    Shared by `Reader` (driver only) and `registry.api.Registry` (SQLAlchemy engine)."""

    def _read(self, query: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def head(self, ref: str = "main") -> Optional[Version]:
        return self._read(head, ref)

    def resolve(self, spec: str) -> Version:
        """A version by name ("v3") or by ref ("main")."""
        return self._read(resolve, spec)

    def versions(self) -> list[Version]:
        return self.lineage().versions

    def lineage(self) -> Lineage:
        """Every version (by number), each edge with the skill learned, its finetune mode and the alpha chosen, the refs."""
        return self._read(lineage)

    def log(self, ref: Optional[str] = "main", limit: Optional[int] = None) -> list[RefLogEntry]:
        """Moves of `ref` (all refs if None), newest first."""
        return self._read(log, ref, limit)

    def show(self, version: str) -> VersionDetail:
        return self._read(show, version)

    def scores(self, version_or_ref: Optional[str] = None, every: bool = False) -> list[Score]:
        """Scores of a version (default: head of main), by skill then split: the shown evaluation of each
        (the most episodes, ties the earliest: registry.evaluations), or every one recorded (`every`)."""
        return self._read(scores, version_or_ref, every)

    def learn_runs(self) -> list[LearnRun]:
        return self._read(learn_runs)

    def learn_run_for(self, version: str) -> Optional[LearnRun]:
        return self.show(version).learn_run


class Reader(Queries):
    """Query-only access through the database driver alone (see `open_reader`)."""

    def __init__(self, locations: Locations, db: Db):
        self.locations = locations
        self._db = db

    def _read(self, query: Callable[..., T], *args: Any) -> T:
        with self._db.snapshot():
            return query(self._db, *args)

    def close(self) -> None:
        self._db.conn.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_reader(home: Optional[str] = None, db_url: Optional[str] = None, store_url: Optional[str] = None) -> Optional[Reader]:
    """A `Reader` when the database speaks a lean driver and is at SCHEMA_HEAD, else None (open
    `registry.api.Registry` instead: it migrates, or raises what is wrong).

    Raises the same errors as Registry.open: NOT_FOUND for a missing registry ("run `retain
    init`"), UNAVAILABLE (one line) when the server cannot be reached.
    """
    loc = resolve_locations(home, db_url, store_url)
    db = _connect(loc)
    if db is not None:
        if _revision(db) == SCHEMA_HEAD:
            return Reader(loc, db)
        db.conn.close()
    return None


def _connect(loc: Locations) -> Optional[Db]:
    """A driver connection for the URLs the lean path speaks, else None (Registry.open decides)."""
    if loc.sqlite_path is not None and "?" not in loc.db_url:
        import sqlite3

        require_registry_file(loc)
        try:
            conn = sqlite3.connect(loc.sqlite_path, timeout=SQLITE_BUSY_S, isolation_level=None)
        except sqlite3.Error:
            return None
        return Db(conn, "sqlite", loc.db_url, sqlite3)
    kwargs = _psycopg_kwargs(loc.db_url)
    if kwargs is None:
        return None
    import psycopg

    try:
        conn = psycopg.connect(**kwargs)
    except psycopg.OperationalError as e:  # answered here: a second try through SQLAlchemy would wait twice
        raise unavailable(unreachable_message(loc.db_url, e)) from None
    except psycopg.Error:
        return None
    return Db(conn, "postgresql", loc.db_url, psycopg)


def _psycopg_kwargs(url: str) -> Optional[dict[str, Any]]:
    """psycopg.connect arguments for a postgresql+psycopg URL, as SQLAlchemy's dialect builds them
    (user, password, host, port, dbname, then the query string); None for anything else."""
    try:
        parts = urlsplit(url)
        if parts.scheme != LEAN_POSTGRES_SCHEME or "," in parts.netloc:
            return None
        kwargs: dict[str, Any] = {}
        if parts.username:
            kwargs["user"] = unquote(parts.username)
        if parts.password is not None:
            kwargs["password"] = unquote(parts.password)
        if parts.hostname:
            kwargs["host"] = parts.hostname
        if parts.port is not None:
            kwargs["port"] = parts.port
        if parts.path.lstrip("/"):
            kwargs["dbname"] = unquote(parts.path.lstrip("/"))
        query = parse_qsl(parts.query, keep_blank_values=True)
        if len({k for k, _ in query}) != len(query):  # a repeated key: leave it to SQLAlchemy
            return None
        kwargs.update(query)
        return kwargs
    except ValueError:  # a port that is not a number, ...
        return None


def _revision(db: Db) -> Optional[str]:
    """The schema revision, or None when it cannot be read here (no schema, not a database, ...)."""
    cur = db.conn.cursor()
    try:
        cur.execute("SELECT version_num FROM alembic_version")
        rows = cur.fetchall()
        return rows[0][0] if len(rows) == 1 else None
    except db.driver.Error:  # no schema, not a database, ...: Registry.open names the problem
        return None
    finally:
        cur.close()
