"""The lean reader's SQL (registry/reader.py) against the schema the migrations build.

The schema lives in three places: the ORM models, the Alembic migrations, and the plain SQL of the
reader. The migrations are what a database really holds, so every SELECT the reader can send is
compiled (EXPLAIN) against a database at the migrations' head: a renamed or dropped column, or a
table the reader names that no migration creates, fails here rather than in a user's query.
"""
from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

import registry.reader as reader

READER_SOURCE = Path(reader.__file__)


def _value(node: ast.AST) -> str | None:
    """The text of a string expression built from literals and the module's own constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(reader, node.id, None)
        return value if isinstance(value, str) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _value(node.left), _value(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = [_value(v.value) if isinstance(v, ast.FormattedValue) else _value(v) for v in node.values]
        return "".join(parts) if all(p is not None for p in parts) else None
    return None


def reader_statements(source: str) -> list[str]:
    """Every SELECT statement the module's source spells out, whole (an f-string's pieces are
    visited too; a piece without FROM is not a statement)."""
    found = {text for node in ast.walk(ast.parse(source)) if (text := _value(node)) is not None}
    return sorted(s for s in found if s.lstrip().upper().startswith("SELECT ") and " FROM " in s.upper())


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    from registry.api import Registry

    home = tmp_path_factory.mktemp("schema") / "home"
    with Registry.open(home=str(home), create=True) as reg:
        path = reg.locations.sqlite_path
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


def _compile(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute("EXPLAIN " + sql, [None] * sql.count("?"))


def test_every_select_of_the_reader_compiles_against_the_migrated_schema(migrated):
    statements = reader_statements(READER_SOURCE.read_text())
    assert len(statements) >= 15, statements  # the reader's queries were found, not silently none
    failures = []
    for sql in statements:
        try:
            _compile(migrated, sql)
        except sqlite3.Error as e:
            failures.append(f"{e}: {sql}")
    assert not failures, "\n".join(failures)


def test_a_column_the_migrations_do_not_have_is_caught(migrated):
    drifted = READER_SOURCE.read_text().replace("s.seed, s.created_at", "s.seed, s.evaluated_by, s.created_at")
    statements = [s for s in reader_statements(drifted) if "evaluated_by" in s]
    assert statements
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        _compile(migrated, statements[0])
