"""Pieces every command shares: the `--json` option, output, and opening the registry from the
global `--home/--db/--store` options."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Callable

import click


def json_option(f: Callable) -> Callable:
    """Add `--json` to a query command; the command reads it as the `as_json` argument."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def _default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (dt.datetime, dt.date)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, default=_default, indent=2, sort_keys=False)


def emit(obj: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print `obj` as JSON or as the human text `text(obj)` gives."""
    click.echo(to_json(obj) if as_json else text(obj))


def registry_from_ctx(ctx: click.Context, create: bool = False):
    """Open the registry named by the global options (or their RETAIN_* variables)."""
    from registry.api import Registry

    root = ctx.find_root().obj or {}
    return Registry.open(home=root.get("home"), db_url=root.get("db_url"), store_url=root.get("store_url"), create=create)


def reader_from_ctx(ctx: click.Context):
    """Open the registry for a read-only query (lineage, log, scores, show): the lean reader,
    which does not import SQLAlchemy, when the database is at the current schema; otherwise
    the full Registry (which migrates). Both offer the same query methods and records."""
    from registry.reader import open_reader

    root = ctx.find_root().obj or {}
    where = {"home": root.get("home"), "db_url": root.get("db_url"), "store_url": root.get("store_url")}
    reader = open_reader(**where)
    if reader is not None:
        return reader
    from registry.api import Registry

    return Registry.open(**where)


def base_move_text(ref: str, before, version) -> str:
    """What an import did to `ref`: started it, moved it (the old head stays), or nothing at all."""
    if before is None:
        return f"{ref} -> {version.name} (a new ref)"
    if before.name == version.name:
        return f"{ref} is already at {version.name}, which holds these weights; nothing was imported"
    return f"{ref}: {before.name} -> {version.name} (a new root; {before.name} stays, see `retain lineage`)"
