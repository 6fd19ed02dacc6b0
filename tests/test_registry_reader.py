"""The lean read path (registry/reader.py) against the ORM, on SQLite and PostgreSQL.

The reader decodes rows itself (JSON columns, timestamps, NULL parents), so these tests hold
its records against an independent reading of the same rows through the SQLAlchemy models, and
the `--json` output of the CLI (lean path) against the Python API (engine path) byte for byte.
"""
from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli import cli as root
from registry import db as dbmod
from registry.api import Registry
from registry.cli_support import to_json
from registry.errors import Code, RegistryError
from registry.evaluations import shown_scores
from registry.models import LearnRunRow, RefLogRow, RefRow, ScoreRow, SkillRow, VersionRow
from registry.reader import Reader, _psycopg_kwargs, open_reader
from registry.records import (
    LearnRun, Lineage, LineageEdge, NewLearnRun, NewScore, RefLogEntry, Score, Version,
)
from registry.render import lineage_dict
from bad_input_kit import assert_one_line_error


@pytest.fixture
def history(registry, make_checkpoint):
    """Branches, two refs, float / integral / per-modality alphas, generalist and skill scores."""
    registry.import_base(make_checkpoint("base.safetensors", seed=0), name="tiny")
    alphas = [0.75, 1.0, {"vision": 1.0, "language": 0.8, "action": 1}]
    for i, (skill, alpha) in enumerate(zip(["plates", "whiteboard", "pot-on-stove"], alphas), start=1):
        run = NewLearnRun(skill=skill, demo_set_id=None, recipe={"mode": "co-ft", "mix": 0.25, "nested": {"steps": [1, 2]}},
                          delta_dir=None, alpha=alpha, sweep=[{"alpha": 0.5, "scores": {"ood:object": 0.4}}],
                          timings={"finetune_s": 1.5})
        scores = [NewScore(skill, "id", 7, 10, "sim-v1"), NewScore(skill, "ood:object", 3, 20, "sim-v1"),
                  NewScore(None, "generalist", 30, 40, "sim-v1")]
        registry.commit_version(make_checkpoint(f"{skill}.safetensors", seed=i), parent=f"v{i - 1}", how="learn",
                                expected_head=f"v{i - 1}", config={"policy": "builtin-vla", "policy_config": {"d": 32}},
                                learn_run=run, scores=scores, message=f"learn {skill} — ünïcode")
    registry.rollback("v1", reason="whiteboard hurt plates")
    registry.record_scores("v1", [NewScore("plates", "id", 8, 10, "sim-v2")])
    registry.import_base(make_checkpoint("other.safetensors", seed=9), ref="exp")
    return registry


def _reader(reg: Registry) -> Reader:
    loc = reg.locations
    r = open_reader(home=str(loc.home), db_url=loc.db_url, store_url=loc.store_url)
    assert isinstance(r, Reader), type(r)  # the schema is current, so no SQLAlchemy
    return r


def _aware(t):
    import datetime as dt

    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _orm_view(reg: Registry) -> tuple[Lineage, list[RefLogEntry], dict[str, list[Score]], list[LearnRun]]:
    """The same records read through the SQLAlchemy models: the oracle for the reader's decoding."""
    with Session(reg.engine) as s:
        rows = s.execute(select(VersionRow).order_by(VersionRow.number)).scalars().all()
        name = {r.id: f"v{r.number}" for r in rows}
        skill = {k.id: k.name for k in s.execute(select(SkillRow)).scalars()}
        refs = s.execute(select(RefRow).order_by(RefRow.name)).scalars().all()
        runs = s.execute(select(LearnRunRow).order_by(LearnRunRow.id)).scalars().all()
        by_result = {r.result_id: r for r in runs}
        versions = [Version(name[r.id], r.number, name.get(r.parent_id), r.weight_hash, r.how, _aware(r.created_at),
                            r.config, r.recipe, r.message, tuple(x.name for x in refs if x.version_id == r.id)) for r in rows]
        edges = [LineageEdge(name[r.parent_id], name[r.id], r.how, skill[by_result[r.id].skill_id] if r.id in by_result else None,
                             by_result[r.id].mode if r.id in by_result else None, by_result[r.id].alpha if r.id in by_result else None)
                 for r in rows if r.parent_id is not None]
        lineage = Lineage(versions, edges, {x.name: name[x.version_id] for x in refs})
        log = [RefLogEntry(e.ref, name.get(e.old_version_id), name.get(e.new_version_id), e.action, e.reason, e.who, _aware(e.at))
               for e in s.execute(select(RefLogRow).order_by(RefLogRow.id.desc())).scalars()]
        scores: dict[str, list[Score]] = {}
        for r in s.execute(select(ScoreRow)).scalars():
            scores.setdefault(name[r.version_id], []).append(r)
        scores = {v: [Score(v, skill.get(r.skill_id), r.split, r.successes, r.episodes, r.rate, r.ci_low, r.ci_high, r.evaluator,
                            _aware(r.created_at), r.seed, r.id)
                      for r in sorted(rs, key=lambda r: (r.skill_id is None, skill.get(r.skill_id) or "", r.split, r.id))]
                  for v, rs in scores.items()}
        learn = [LearnRun(r.id, skill[r.skill_id], name.get(r.parent_id), name.get(r.result_id), r.demo_set_id, r.mode, r.recipe,
                          f"sha256:{r.delta}" if r.delta else None, r.alpha, r.sweep, r.timings, r.status, _aware(r.created_at))
                 for r in runs]
    return lineage, log, scores, learn


def test_reader_records_equal_the_orm_rows(history):
    lineage, log, scores, learn = _orm_view(history)
    with _reader(history) as r:
        assert r.lineage() == lineage
        assert r.log(None) == log
        assert r.log("main") == [e for e in log if e.ref == "main"]
        assert r.log("main", limit=2) == [e for e in log if e.ref == "main"][:2]
        for v in lineage.versions:
            assert r.scores(v.name, every=True) == scores.get(v.name, [])
            assert r.scores(v.name) == shown_scores(scores.get(v.name, []))
        assert [(s.successes, s.episodes) for s in r.scores("v1") if s.skill == "plates" and s.split == "id"] == [(7, 10)]
        assert r.learn_runs() == learn
    alphas = [e.alpha for e in lineage.edges]
    assert alphas == [0.75, 1.0, {"vision": 1.0, "language": 0.8, "action": 1}]  # decoded, not JSON text
    assert [e.mode for e in lineage.edges] == ["co-ft"] * 3 and {r.mode for r in learn} == {"co-ft"}
    assert [s.skill for s in scores["v1"]][-1] is None  # the generalist suite sorts last


def test_reader_and_registry_api_return_the_same_records(history):
    with _reader(history) as r:
        names = [v.name for v in history.lineage().versions]
        assert r.lineage() == history.lineage()
        assert r.head() == history.head() and r.head("exp") == history.head("exp") and r.head("nope") is None
        for spec in ["main", "exp", *names]:
            assert r.resolve(spec) == history.resolve(spec)
            assert r.show(spec) == history.show(spec)
            assert r.scores(spec) == history.scores(spec)
        assert r.scores() == history.scores()


def test_cli_json_is_byte_for_byte_the_api(history, cli):
    assert cli("lineage", "--json").output == to_json(lineage_dict(history.lineage())) + "\n"
    assert cli("log", "--all", "--json").output == to_json(history.log(None)) + "\n"
    assert cli("log", "-n", "2", "--json").output == to_json(history.log("main", limit=2)) + "\n"
    assert cli("scores", "v1", "--json").output == to_json(history.scores("v1")) + "\n"
    assert cli("scores", "--json").output == to_json(history.scores()) + "\n"
    assert cli("show", "v3", "--json").output == to_json(history.show("v3")) + "\n"


def test_old_schema_goes_through_the_migrating_open(db_url, tmp_path):
    """A database at the first migration: the query commands migrate it (Registry.open) and answer."""
    from test_registry_migrations import _fill_at_first_revision

    engine = dbmod.make_engine(db_url)
    dbmod.upgrade(engine, "0001")
    with engine.begin() as conn:
        _fill_at_first_revision(conn)
    engine.dispose()
    r = CliRunner().invoke(root, ["--home", str(tmp_path / "home"), "--db", db_url, "lineage"])
    assert r.exit_code == 0 and "v1  learn  plates task-ft alpha language=0.8  [main]" in r.output, r.output
    engine = dbmod.make_engine(db_url)
    assert dbmod.current_revision(engine) == dbmod.SCHEMA_HEAD
    engine.dispose()
    with open_reader(home=str(tmp_path / "home"), db_url=db_url) as reader:
        assert isinstance(reader, Reader) and reader.scores("v1")[0].ci_low > 0  # backfilled by 0002


@pytest.mark.parametrize("command", [["lineage"], ["log"], ["scores"], ["show", "v0"]])
def test_missing_registry_says_run_init(tmp_path, command):
    r = CliRunner().invoke(root, ["--home", str(tmp_path / "nothing-here"), *command])
    assert_one_line_error(r, Code.NOT_FOUND, f"no registry at {tmp_path / 'nothing-here'}; run `retain init`")
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.parametrize("command", [["lineage"], ["log"], ["scores"], ["show", "v0"]])
def test_empty_postgres_database_says_run_init(postgres_url, tmp_path, command):
    r = CliRunner().invoke(root, ["--home", str(tmp_path), "--db", postgres_url, *command])
    assert_one_line_error(r, Code.NOT_FOUND, "holds no registry; run `retain init`")


def test_unreachable_postgres_gives_the_orm_message(tmp_path):
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:1/nowhere"
    with pytest.raises(RegistryError) as lean:
        open_reader(home=str(tmp_path), db_url=url)
    with pytest.raises(RegistryError) as orm:
        Registry.open(home=str(tmp_path), db_url=url)
    assert lean.value.code == orm.value.code == Code.UNAVAILABLE
    assert str(lean.value) == str(orm.value)
    assert "secret" not in str(lean.value) and str(lean.value).startswith("cannot reach database postgresql+psycopg://postgres:***@")


@pytest.mark.parametrize("spec, needle", [("v99999999999", "version v99999999999 does not exist (latest is v4)"),
                                          ("v²", "'v²' is neither a version"), ("", "no version given")])
def test_odd_version_names_get_one_line(history, cli, spec, needle):
    r = cli("show", spec)
    assert_one_line_error(r, Code.INVALID_VALUE if spec == "" else Code.NOT_FOUND, needle)


def test_reader_is_not_blocked_by_a_writer(history, cli):
    path = history.locations.sqlite_path
    if path is None:
        pytest.skip("SQLite's write lock; PostgreSQL readers never wait on writers")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE versions SET message = 'uncommitted'")
        r = cli("lineage", "--json")
        assert r.exit_code == 0 and "uncommitted" not in r.output
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://u%40x:p%3Ass@db.example:5433/my%20db?sslmode=disable&connect_timeout=3",
    "postgresql+psycopg://u@/d?host=/var/run/postgresql",
    "postgresql+psycopg:///d",
])
def test_psycopg_arguments_match_sqlalchemy(url):
    from sqlalchemy import create_engine

    engine = create_engine(url)  # does not connect
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    cparams.pop("context", None)  # SQLAlchemy's adapter map: psycopg's defaults for our column types
    assert _psycopg_kwargs(url) == cparams and not cargs


@pytest.mark.parametrize("url", ["postgresql://u@h/d", "postgresql+psycopg2://u@h/d", "mysql://h/d",
                                 "postgresql+psycopg://u@h1:5432,h2:5433/d", "postgresql+psycopg://u@h/d?a=1&a=2"])
def test_other_urls_are_left_to_sqlalchemy(url):
    assert _psycopg_kwargs(url) is None
