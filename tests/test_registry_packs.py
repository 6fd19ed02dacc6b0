"""Versions stored as packs against their parent (registry/pack.py, migration 0005): bit-exact
checkout of every version, the refs' heads cached whole, damage caught, old rows read as before."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry.api import Registry
from registry.checkpoint import CheckpointWriter, TensorSpec, open_checkpoint, weight_hash
from registry.errors import Code, RegistryError
from registry.pack import unpack, write_pack
from registry.records import NewLearnRun


def _bf16(rng, shape, scale=0.02) -> np.ndarray:
    """bf16 bits (uint16) of normal values: the top half of float32."""
    return (rng.normal(0, scale, shape).astype("<f4").view("<u4") >> 16).astype("<u2")


def _moved(rng, bits: np.ndarray, rel: float) -> np.ndarray:
    """A finetune-like move: each value by ~rel of the weights' scale, rounded to bf16 by truncation."""
    f = (bits.astype("<u4") << 16).view("<f4")
    return ((f + rng.normal(0, 0.02 * rel, f.shape).astype("<f4")).view("<u4") >> 16).astype("<u2")


def _write(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> Path:
    specs = [TensorSpec(n, d, a.shape) for n, (d, a) in sorted(tensors.items())]
    with CheckpointWriter(path, specs) as w:
        for s in specs:
            w.write(s.name, tensors[s.name][1].tobytes())
    return path


def _hash(path: Path) -> str:
    with open_checkpoint(path) as ck:
        return weight_hash(ck)


def test_pack_rebuilds_every_kind_of_tensor_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    a = _bf16(rng, (300, 500))
    ref = _write(tmp_path / "ref.safetensors", {"w": ("BF16", a), "f32": ("F32", rng.normal(size=(7, 3)).astype("<f4")),
                                                "steps": ("I64", np.arange(5, dtype="<i8")), "gone": ("F32", np.ones(3, "<f4"))})
    odd = np.array([0.0, -0.0, np.nan, np.inf, 1e-40], dtype="<f4")  # signed zero, NaN, inf, subnormal
    tgt = _write(tmp_path / "tgt.safetensors", {"w": ("BF16", _moved(rng, a, 0.01)), "f32": ("F32", odd[[0, 1, 2, 3, 4, 0, 1]].repeat(3).reshape(7, 3)),
                                                "steps": ("I64", np.arange(6, dtype="<i8")), "new": ("F16", np.zeros((0, 4), "<f2"))})
    report = write_pack(ref, tgt, tmp_path / "pack")
    assert report.coded_tensors == 2 and report.tensors == 4  # w and f32 coded; steps (reshaped) and new whole
    assert report.stored_bytes < 0.6 * report.target_bytes
    out = unpack(ref, tmp_path / "pack", tmp_path / "out")
    assert _hash(out) == _hash(tgt) == report.target_hash


def test_pack_refuses_other_reference_and_damage(tmp_path):
    rng = np.random.default_rng(1)
    a = _bf16(rng, (200, 300))
    ref = _write(tmp_path / "ref.safetensors", {"w": ("BF16", a)})
    other = _write(tmp_path / "other.safetensors", {"w": ("BF16", _bf16(rng, (200, 300)))})
    tgt = _write(tmp_path / "tgt.safetensors", {"w": ("BF16", _moved(rng, a, 0.01))})
    write_pack(ref, tgt, tmp_path / "pack.safetensors")
    with pytest.raises(RegistryError, match="was made against") as e:
        unpack(other, tmp_path / "pack.safetensors", tmp_path / "x")
    assert e.value.code == Code.INVALID_VALUE and not (tmp_path / "x").exists()
    raw = bytearray((tmp_path / "pack.safetensors").read_bytes())
    raw[-40] ^= 0x10  # a bit inside the compressed XOR
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(RegistryError) as e:
        unpack(ref, tmp_path / "bad.safetensors", tmp_path / "y")
    assert e.value.code == Code.CORRUPT and not (tmp_path / "y").exists()


def _chain(registry: Registry, tmp_path: Path, n: int = 3, rel: float = 0.01):
    """A base and `n` learned versions, each committed as a pack against its parent."""
    rng = np.random.default_rng(7)
    weights = {"lang.w": ("BF16", _bf16(rng, (400, 512))), "act.w": ("BF16", _bf16(rng, (64, 64))),
               "act.b": ("F32", rng.normal(size=64).astype("<f4"))}
    paths = [_write(tmp_path / "w0.safetensors", weights)]
    registry.import_base(paths[0], name="tiny")
    for i in range(1, n + 1):
        weights = {k: (d, _moved(rng, a, rel) if d == "BF16" else a + np.float32(0.001)) for k, (d, a) in weights.items()}
        paths.append(_write(tmp_path / f"w{i}.safetensors", weights))
        parent_dir = registry.checkout(f"v{i - 1}", tmp_path / f"parent{i}")
        registry.commit_version(paths[i], parent=f"v{i - 1}", how="learn", expected_head=f"v{i - 1}", parent_weights=parent_dir,
                                learn_run=NewLearnRun(skill="s", demo_set_id=None, recipe={}, delta_dir=None, alpha=1.0,
                                                      sweep=[], timings={}), message=f"learn {i}")
    return paths


def _rows(registry: Registry):
    from sqlalchemy import text

    with registry.engine.connect() as c:
        return {f"v{n}": (bool(p), h) for n, p, h in c.execute(text("SELECT number, packed, head_copy FROM versions ORDER BY number"))}


def test_a_chain_stores_packs_caches_only_the_head_and_checks_out_every_version_exactly(registry, tmp_path):
    paths = _chain(registry, tmp_path)
    rows = _rows(registry)
    assert rows["v0"] == (False, None)  # the base is stored whole
    assert [rows[f"v{i}"][0] for i in (1, 2, 3)] == [True] * 3
    assert [rows[f"v{i}"][1] is not None for i in (1, 2, 3)] == [False, False, True]  # only the head keeps a whole copy
    for i, p in enumerate(paths):
        out = registry.checkout(f"v{i}", tmp_path / f"out{i}")
        assert _hash(out) == _hash(p) == registry.resolve(f"v{i}").weight_hash
    assert registry.verify().ok
    # the dropped whole copies are garbage; the packs and the head copy are not
    registry.gc(grace_seconds=0)
    assert registry.verify().ok
    assert _hash(registry.checkout("v2", tmp_path / "again2")) == _hash(paths[2])


def test_rollback_restores_a_head_copy_and_drops_the_one_it_leaves(registry, tmp_path):
    paths = _chain(registry, tmp_path)
    registry.gc(grace_seconds=0)
    registry.rollback("v1", reason="try again")
    rows = _rows(registry)
    assert rows["v1"][1] is not None and rows["v3"][1] is None
    registry.gc(grace_seconds=0)
    assert registry.verify().ok
    for i in (1, 3):
        assert _hash(registry.checkout(f"v{i}", tmp_path / f"o{i}")) == _hash(paths[i])


def test_verify_names_a_damaged_pack(registry, tmp_path):
    _chain(registry, tmp_path, n=2)
    registry.gc(grace_seconds=0)
    from sqlalchemy import text

    with registry.engine.connect() as c:
        folder = c.execute(text("SELECT weights FROM versions WHERE number = 1")).scalar()
        blob = c.execute(text("SELECT blob FROM folder_files WHERE folder = :f"), {"f": folder}).scalar()
    path = Path(registry.store.path(blob))
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 1
    path.write_bytes(bytes(raw))
    problems = registry.verify().problems
    assert any(blob in p for p in problems)  # the blob's own hash
    assert any(p.startswith("v1:") for p in problems) and any(p.startswith("v2:") for p in problems)  # and what rebuilds from it
    with pytest.raises(RegistryError) as e:
        registry.checkout("v1", tmp_path / "bad")
    assert e.value.code == Code.CORRUPT and not (tmp_path / "bad").exists()


def test_parent_weights_that_are_not_the_parent_are_refused(registry, tmp_path):
    rng = np.random.default_rng(3)
    base = _write(tmp_path / "b.safetensors", {"w": ("BF16", _bf16(rng, (10, 10)))})
    other = _write(tmp_path / "o.safetensors", {"w": ("BF16", _bf16(rng, (10, 10)))})
    registry.import_base(base)
    with pytest.raises(RegistryError, match="not v0's") as e:
        registry.commit_version(other, parent="v0", how="learn", expected_head="v0", parent_weights=other)
    assert e.value.code == Code.INVALID_VALUE and registry.head().name == "v0"


def test_a_finetune_recorded_before_packs_still_rebuilds_from_its_f32_delta(registry, tmp_path):
    """Learn runs committed before migration 0006 kept an F32 delta against the parent (retain.delta):
    recorded_finetuned reads it as before."""
    from retain.delta import write_delta
    from retain.finetune_store import recorded_finetuned

    rng = np.random.default_rng(5)
    a = _bf16(rng, (64, 64))
    base = _write(tmp_path / "base.safetensors", {"w": ("BF16", a)})
    ft = _write(tmp_path / "ft.safetensors", {"w": ("BF16", _moved(rng, a, 0.01))})
    registry.import_base(base)
    write_delta(base, ft, tmp_path / "delta")
    registry.commit_version(ft, parent="v0", how="learn", expected_head="v0",
                            learn_run=NewLearnRun(skill="s", demo_set_id=None, recipe={}, delta_dir=str(tmp_path / "delta"),
                                                  alpha=1.0, sweep=[], timings={}))
    out, h = recorded_finetuned(registry, registry.learn_run_for("v1"), base, tmp_path / "work")
    assert _hash(out) == _hash(ft) == h
