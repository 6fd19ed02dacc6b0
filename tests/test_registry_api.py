"""The Registry Python API on SQLite and PostgreSQL: commits, checkout, lineage, scores, store."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from bad_input_kit import overwrite_blob
from registry.api import Registry
from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import Code, RegistryError
from registry.records import NewLearnRun, NewScore


def _bytes_of(path: Path) -> dict[str, bytes]:
    with open_checkpoint(path) as ck:
        return {n: bytes(ck.read(n)) for n in ck.names}


def test_import_checkout_roundtrip_is_bit_exact(registry, make_checkpoint, tmp_path):
    src = make_checkpoint("base.safetensors", seed=1)
    v0 = registry.import_base(src, name="tiny")
    assert (v0.name, v0.parent, v0.how, v0.refs) == ("v0", None, "base-import", ("main",))
    assert registry.head().name == "v0" and registry.resolve("main") == registry.resolve("v0")
    out = registry.checkout("v0", tmp_path / "out")
    assert _bytes_of(out) == _bytes_of(src)
    assert v0.recipe["name"] == "tiny"


def test_sharded_and_single_file_hash_the_same_and_shards_survive(registry, make_checkpoint, tmp_path):
    single = make_checkpoint("one.safetensors", seed=2)
    sharded = make_checkpoint("sharded", seed=2, shard_bytes=300)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    a = registry.import_base(single)
    b = registry.import_base(sharded, force=True)  # the same weights again: a second root only when forced
    assert a.weight_hash == b.weight_hash and b.name != a.name
    files = [f.path for f in registry.show(b.name).files]
    assert "model.safetensors.index.json" in files and len(files) > 2
    out = registry.export(b.name, tmp_path / "exp")
    assert (out / "config.json").exists() and (out / "model.safetensors.index.json").exists()
    with open_checkpoint(out) as ck:
        assert weight_hash(ck) == b.weight_hash


def test_commit_with_learn_run_scores_and_demo_set(registry, make_checkpoint, tmp_path):
    v0 = registry.import_base(make_checkpoint("base.safetensors", seed=0))
    demos = tmp_path / "demos"
    (demos / "data").mkdir(parents=True)
    (demos / "data" / "episode_0.parquet").write_bytes(b"not really parquet, only bytes")
    (demos / "meta.json").write_text('{"fps": 10}')
    ds = registry.put_demo_set("plates", demos, source="sim:plates:id", episodes=3, frames=90)
    delta = make_checkpoint("delta", seed=5)
    run = NewLearnRun(skill="plates", demo_set_id=ds.id, recipe={"mode": "co-ft", "steps": 10}, delta_dir=str(delta),
                      alpha={"vision": 1.0, "language": 0.8, "action": 1.0}, sweep=[{"alpha": 0.5, "scores": {"ood": 0.4}}],
                      timings={"finetune_s": 1.5})
    scores = [NewScore("plates", "id", 9, 10, "eval-v1"), NewScore("plates", "ood:position", 4, 10, "eval-v1"),
              NewScore(None, "generalist", 30, 40, "eval-v1")]
    v1 = registry.commit_version(make_checkpoint("ft.safetensors", seed=3), parent=v0.name, how="learn", expected_head="v0",
                                 config={"policy": "builtin-vla"}, recipe={"seed": 1}, learn_run=run, scores=scores, message="learn plates")
    assert (v1.name, v1.parent, v1.refs, v1.config) == ("v1", "v0", ("main",), {"policy": "builtin-vla"})
    lin = registry.lineage()
    assert [(e.parent, e.child, e.skill, e.mode, e.alpha) for e in lin.edges] == [("v0", "v1", "plates", "co-ft", run.alpha)]
    got = registry.scores()
    assert [(s.skill, s.split, s.successes, s.episodes) for s in got] == [
        ("plates", "id", 9, 10), ("plates", "ood:position", 4, 10), (None, "generalist", 30, 40)]
    assert got[0].rate == pytest.approx(0.9) and got[0].ci_low < 0.9 < got[0].ci_high
    detail = registry.show("v1")
    assert detail.learn_run.skill == "plates" and detail.learn_run.mode == "co-ft" and detail.learn_run.demo_set_id == ds.id and detail.learn_run.sweep == run.sweep
    assert registry.show("v0").children == ["v1"]
    back = registry.fetch_demo_set(ds.id, tmp_path / "demos_back")
    assert (back / "data" / "episode_0.parquet").read_bytes() == b"not really parquet, only bytes"
    assert _bytes_of(registry.fetch_delta(detail.learn_run.id, tmp_path / "delta_back")) == _bytes_of(delta)
    registry.record_scores("v1", [NewScore("whiteboard", "id", 0, 10, "eval-v1")])
    assert [s.skill for s in registry.scores("v1")][-2:] == ["whiteboard", None]
    assert {s.name for s in registry.skills()} == {"plates", "whiteboard"}


def test_stale_expected_head_is_a_conflict_and_changes_nothing(registry, make_checkpoint):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    registry.commit_version(make_checkpoint("b.safetensors", seed=1), parent="v0", how="learn", expected_head="v0")
    before = (registry.lineage(), registry.log())
    with pytest.raises(RegistryError) as err:
        registry.commit_version(make_checkpoint("c.safetensors", seed=2), parent="v0", how="learn", expected_head="v0",
                                scores=[NewScore("plates", "id", 1, 2, "e")])
    assert err.value.code == Code.CONFLICT
    assert "ref 'main' is at v1 but this commit expected v0" in str(err.value)
    assert (registry.lineage(), registry.log()) == before
    assert registry.skills() == []  # the scores' skill was not created either


def test_rollback_moves_the_ref_deletes_nothing_and_next_commit_builds_on_it(registry, make_checkpoint):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    registry.commit_version(make_checkpoint("b.safetensors", seed=1), parent="v0", how="learn", expected_head="v0")
    entry = registry.rollback("v0", reason="plates regressed")
    assert (entry.old, entry.new, entry.action, entry.reason) == ("v1", "v0", "rollback", "plates regressed")
    assert registry.rollback("v0") is None  # already there: nothing recorded
    assert [v.name for v in registry.versions()] == ["v0", "v1"]
    v2 = registry.commit_version(make_checkpoint("c.safetensors", seed=2), parent="v0", how="learn", expected_head="v0")
    assert (v2.name, v2.parent) == ("v2", "v0")
    assert [(e.old, e.new) for e in registry.log()] == [("v0", "v2"), ("v1", "v0"), ("v0", "v1"), (None, "v0")]


def test_branch_refs_are_independent(registry, make_checkpoint):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    registry.commit_version(make_checkpoint("b.safetensors", seed=1), parent="v0", how="learn", ref="exp", expected_head=None)
    assert registry.head("main").name == "v0" and registry.head("exp").name == "v1"
    assert registry.lineage().refs == {"exp": "v1", "main": "v0"}
    with pytest.raises(RegistryError) as err:
        registry.commit_version(make_checkpoint("c.safetensors", seed=2), parent="v0", how="learn", ref="exp", expected_head=None)
    assert err.value.code == Code.CONFLICT


def test_flipped_byte_is_reported_as_corruption_naming_the_blob(registry, make_checkpoint, tmp_path):
    v0 = registry.import_base(make_checkpoint("a.safetensors", seed=0))
    assert registry.verify().ok
    blob = registry.show("v0").files[0].blob
    path = Path(registry.store.path(blob))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    overwrite_blob(path, bytes(data))
    report = registry.verify()
    assert not report.ok and any(blob in p for p in report.problems) and any(p.startswith("v0:") for p in report.problems)
    with pytest.raises(RegistryError) as err:
        registry.checkout(v0.name, tmp_path / "out")
    assert err.value.code == Code.CORRUPT and blob in str(err.value)
    assert not (tmp_path / "out").exists()  # never served, nothing half-written


def test_blobs_are_shared_and_never_overwritten(registry, make_checkpoint):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    blob = registry.show("v0").files[0].blob
    path = Path(registry.store.path(blob))
    mtime_ns = path.stat().st_mtime_ns
    registry.import_base(make_checkpoint("again.safetensors", seed=0), force=True)  # the same weights as a second root
    assert registry.show("v1").files[0].blob == blob
    assert path.stat().st_mtime_ns >= mtime_ns and registry.verify().blobs_checked == 1


def test_gc_deletes_only_unreferenced_old_blobs(registry, make_checkpoint, tmp_path):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    orphan_sha, _ = registry.store.put_file(make_checkpoint("orphan.safetensors", seed=9))
    assert registry.gc(grace_seconds=3600).orphan_files == []  # too young: could be a commit in flight
    dry = registry.gc(grace_seconds=0, dry_run=True)
    assert dry.orphan_files == [orphan_sha] and registry.store.exists(orphan_sha)
    report = registry.gc(grace_seconds=0)
    assert report.orphan_files == [orphan_sha] and not registry.store.exists(orphan_sha)
    assert registry.verify().ok and registry.checkout("v0", tmp_path / "co").exists()


def test_memory_store_url(db_url, tmp_path, make_checkpoint):
    with Registry.open(home=str(tmp_path / "h"), db_url=db_url, store_url=f"memory://retain-{os.getpid()}-{tmp_path.name}",
                       create=True) as reg:
        v0 = reg.import_base(make_checkpoint("a.safetensors", seed=0))
        assert reg.verify().ok
        out = reg.checkout(v0.name, tmp_path / "out")
        with open_checkpoint(out) as ck:
            assert weight_hash(ck) == v0.weight_hash


def test_open_without_registry_says_run_init(tmp_path):
    with pytest.raises(RegistryError) as err:
        Registry.open(home=str(tmp_path / "nothing"))
    assert err.value.code == Code.NOT_FOUND and "run `retain init`" in str(err.value)


def test_records_are_plain_dataclasses(registry, make_checkpoint):
    v0 = registry.import_base(make_checkpoint("a.safetensors"))
    assert dataclasses.is_dataclass(v0) and dataclasses.asdict(registry.show("v0"))["version"]["name"] == "v0"


def test_non_json_config_is_refused_before_anything_is_stored(registry, make_checkpoint):
    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    new = make_checkpoint("b.safetensors", seed=1)
    with pytest.raises(RegistryError) as err:
        registry.commit_version(new, parent="v0", how="learn", expected_head="v0", config={"lr": float("nan")})
    assert err.value.code == Code.INVALID_VALUE and "config must be plain JSON" in str(err.value)
    with pytest.raises(RegistryError) as err:
        registry.commit_version(new, parent="v0", how="merge", expected_head="v0")
    assert "how='merge' is not one of" in str(err.value)
    assert [v.name for v in registry.versions()] == ["v0"] and registry.verify().blobs_checked == 1


def test_gc_reclaims_rows_and_files_nothing_references_any_more(registry, make_checkpoint, tmp_path):
    """A folder whose entity was deleted (by an operator, with SQL) loses its rows and blob files;
    blobs another entity still uses stay."""
    from sqlalchemy import delete

    from registry.models import DemoSetRow

    registry.import_base(make_checkpoint("a.safetensors", seed=0))
    demos = tmp_path / "demos"
    demos.mkdir()
    (demos / "episodes.bin").write_bytes(b"demo bytes")
    shared = registry.show("v0").files[0]
    (demos / "copy.safetensors").write_bytes(Path(registry.store.path(shared.blob)).read_bytes())
    ds = registry.put_demo_set("plates", demos, source="sim", episodes=1, frames=1)
    with registry.engine.begin() as conn:
        conn.execute(delete(DemoSetRow).where(DemoSetRow.id == ds.id))
    report = registry.gc(grace_seconds=0)
    assert len(report.unreferenced_folders) == 1 and len(report.unreferenced_blobs) == 1
    (gone,) = report.unreferenced_blobs
    assert not registry.store.exists(gone) and registry.store.exists(shared.blob)
    assert report.bytes_freed == len(b"demo bytes")
    assert registry.verify().ok and registry.gc(grace_seconds=0).unreferenced_blobs == []
