"""Alembic migrations: first revision -> filled -> head keeps every row; the migrated schema is
the models' schema; downgrades are real. On SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, inspect, text

from registry import db
from registry.api import Registry
from registry.models import Base
from registry.stats import wilson_interval

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def _fill_at_first_revision(conn) -> None:
    """Rows in every table, written with SQL as the 0001 schema knew it (no ci columns)."""
    rows = [
        ("INSERT INTO blobs (sha256, size, created_at) VALUES (:s, 10, :t)", [{"s": "a" * 64, "t": NOW}, {"s": "b" * 64, "t": NOW}]),
        ("INSERT INTO folders (sha256, created_at) VALUES (:s, :t)", [{"s": "f" * 64, "t": NOW}, {"s": "e" * 64, "t": NOW}]),
        ("INSERT INTO folder_files (folder, path, blob, size) VALUES (:f, :p, :b, 10)",
         [{"f": "f" * 64, "p": "model.safetensors", "b": "a" * 64}, {"f": "e" * 64, "p": "data/x.parquet", "b": "b" * 64}]),
        ("INSERT INTO skills (id, name, instructions, created_at) VALUES (1, 'plates', '[\"put the plates in the rack\"]', :t)", [{"t": NOW}]),
        ("INSERT INTO demo_sets (id, skill_id, folder, source, episodes, frames, format, created_at) "
         "VALUES (1, 1, :f, 'sim', 5, 50, 'lerobot-v3', :t)", [{"f": "e" * 64, "t": NOW}]),
        ("INSERT INTO versions (id, number, parent_id, weight_hash, weights, how, config, recipe, message, created_at) "
         "VALUES (:id, :n, :p, 'sha256:x', :w, :how, '{}', '{}', '', :t)",
         [{"id": 1, "n": 0, "p": None, "w": "f" * 64, "how": "base-import", "t": NOW},
          {"id": 2, "n": 1, "p": 1, "w": "f" * 64, "how": "learn", "t": NOW}]),
        ("INSERT INTO learn_runs (id, skill_id, parent_id, result_id, demo_set_id, recipe, delta, alpha, sweep, timings, status, created_at) "
         "VALUES (1, 1, 1, 2, 1, '{\"mode\": \"task-ft\"}', NULL, '{\"language\": 0.8}', '[]', '{}', 'committed', :t)", [{"t": NOW}]),
        ("INSERT INTO scores (id, version_id, skill_id, split, successes, episodes, rate, evaluator, created_at) "
         "VALUES (:id, 2, :sk, :sp, :s, :n, :r, 'e1', :t)",
         [{"id": 1, "sk": 1, "sp": "id", "s": 7, "n": 10, "r": 0.7, "t": NOW},
          {"id": 2, "sk": None, "sp": "generalist", "s": 0, "n": 20, "r": 0.0, "t": NOW}]),
        ("INSERT INTO refs (name, version_id, updated_at) VALUES ('main', 2, :t)", [{"t": NOW}]),
        ("INSERT INTO ref_log (id, ref, old_version_id, new_version_id, action, reason, who, at) VALUES (:id, 'main', :o, :n, :a, '', 'x', :t)",
         [{"id": 1, "o": None, "n": 1, "a": "base-import", "t": NOW}, {"id": 2, "o": 1, "n": 2, "a": "learn", "t": NOW}]),
    ]
    for sql, params in rows:
        for p in params:
            conn.execute(text(sql), p)
    if conn.dialect.name == "postgresql":  # explicit ids above: move the sequences past them
        for table in ("skills", "demo_sets", "versions", "learn_runs", "scores", "ref_log"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))


def test_head_constant_matches_alembic():
    assert db.head_revision() == db.SCHEMA_HEAD


def test_first_revision_filled_then_upgraded_keeps_every_row(db_url, tmp_path):
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert "ci_low" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    with engine.begin() as conn:
        _fill_at_first_revision(conn)
    engine.dispose()
    with Registry.open(home=str(tmp_path / "h"), db_url=db_url, store_url=str(tmp_path / "s")) as reg:  # upgrades on open
        assert db.current_revision(reg.engine) == db.SCHEMA_HEAD
        lin = reg.lineage()
        assert [(v.name, v.parent, v.how) for v in lin.versions] == [("v0", None, "base-import"), ("v1", "v0", "learn")]
        assert [(e.child, e.skill, e.mode, e.alpha) for e in lin.edges] == [("v1", "plates", "task-ft", {"language": 0.8})]
        assert lin.refs == {"main": "v1"}
        assert [(e.old, e.new, e.action) for e in reg.log()] == [("v0", "v1", "learn"), (None, "v0", "base-import")]
        scores = reg.scores("v1")
        assert [(s.skill, s.split, s.successes, s.episodes) for s in scores] == [("plates", "id", 7, 10), (None, "generalist", 0, 20)]
        assert (scores[0].ci_low, scores[0].ci_high) == pytest.approx(wilson_interval(7, 10))
        assert (scores[1].ci_low, scores[1].ci_high) == pytest.approx(wilson_interval(0, 20))
        assert reg.demo_set(1).episodes == 5 and reg.skills()[0].instructions == ("put the plates in the rack",)
        run = reg.show("v1").learn_run
        assert (run.skill, run.parent, run.demo_set_id, run.mode, run.recipe) == ("plates", "v0", 1, "task-ft", {"mode": "task-ft"})
        assert [f.path for f in reg.show("v0").files] == ["model.safetensors"]
        reg.ensure_skill("whiteboard")  # the upgraded database still takes new rows
        assert [s.name for s in reg.skills()] == ["plates", "whiteboard"]


def _schema_diff(engine) -> list:
    """What Alembic's autogenerate would change to make the database the models' schema ([] if nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrated_schema_equals_models(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    diff = _schema_diff(engine)
    engine.dispose()
    assert diff == []


def test_learn_run_mode_is_backfilled_from_each_recipe(db_url):
    """0002 -> 0003: learn_runs.mode takes recipe["mode"]; no mode, or one that is not a short string, stays NULL."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        _fill_at_first_revision(conn)  # learn run 1: {"mode": "task-ft"}
    db.upgrade(engine, "0002")
    assert "mode" not in {c["name"] for c in inspect(engine).get_columns("learn_runs")}
    with engine.begin() as conn:
        recipes = {2: '{"mode": "co-ft", "mix": 0.2}', 3: '{"mode": "external", "finetuned_source": "/w"}', 4: '{"steps": 10}',
                   5: '{"mode": 3}', 6: '{"mode": "' + "x" * 40 + '"}'}
        for rid, recipe in recipes.items():
            conn.execute(text("INSERT INTO learn_runs (id, skill_id, parent_id, result_id, demo_set_id, recipe, delta, alpha, sweep, "
                              "timings, status, created_at) VALUES (:id, 1, 1, NULL, NULL, :r, NULL, '0.5', '[]', '{}', 'committed', :t)"),
                         {"id": rid, "r": recipe, "t": NOW})
    db.upgrade(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    with engine.connect() as conn:
        modes = dict(conn.execute(text("SELECT id, mode FROM learn_runs ORDER BY id")).all())
    assert modes == {1: "task-ft", 2: "co-ft", 3: "external", 4: None, 5: None, 6: None}
    assert _schema_diff(engine) == []
    db.downgrade(engine, "0002")
    assert "mode" not in {c["name"] for c in inspect(engine).get_columns("learn_runs")}
    engine.dispose()


def test_score_seed_is_added_empty_and_dropped_again(db_url):
    """0003 -> 0004: every score row is kept, with seed NULL (not recorded before); downgrade drops the column."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        _fill_at_first_revision(conn)
    db.upgrade(engine, "0003")
    assert "seed" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    db.upgrade(engine, "0004")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, successes, episodes, seed FROM scores ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, 7, 10, None), (2, 0, 20, None)]
    db.downgrade(engine, "0003")
    assert "seed" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    engine.dispose()


def test_downgrade_to_base_and_back(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    db.downgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert "ci_low" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    db.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    engine.dispose()


def test_version_counter_starts_after_the_highest_number_and_is_dropped_again(db_url):
    """0004 -> 0005: counters("versions") holds max(number) + 1; commits draw from it; downgrade drops it."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        _fill_at_first_revision(conn)
        top = conn.execute(text("SELECT max(number) FROM versions")).scalar()
    db.upgrade(engine, "0005")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM counters WHERE name = 'versions'")).scalar() == top + 1
    db.downgrade(engine, "0004")
    assert "counters" not in inspect(engine).get_table_names()
    engine.dispose()


class _Interrupted(Exception):
    pass


def test_an_upgrade_that_fails_midway_leaves_the_schema_where_it_was(db_url):
    """One upgrade is one transaction: a failure after 0002 ran keeps the database at 0001, so a
    process waiting to migrate never sees a half-done upgrade (it would re-run 0002 and fail)."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        _fill_at_first_revision(conn)

    def _fail_on_reaching_0003(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE alembic_version") and "'0003'" in statement + str(parameters):
            raise _Interrupted()

    event.listen(engine, "before_cursor_execute", _fail_on_reaching_0003)
    with pytest.raises(_Interrupted):
        db.upgrade(engine, "0004")
    event.remove(engine, "before_cursor_execute", _fail_on_reaching_0003)
    engine.dispose()

    assert db.current_revision(engine) == "0001"
    assert "ci_low" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    db.upgrade(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM scores")).scalar() == 2
    engine.dispose()
