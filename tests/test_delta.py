import json

import pytest
import torch

from merge_testkit import adversarial, read, same_bits, write
from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import RegistryError
from retain.delta import apply_delta, write_delta

FLOATS = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def _roundtrip(tmp_path, pre, ft, chunk_elems=1000, **kw):
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    report = write_delta(tmp_path / "pre.safetensors", tmp_path / "ft.safetensors", tmp_path / "delta", chunk_elems=chunk_elems, **kw)
    apply_delta(tmp_path / "pre.safetensors", tmp_path / "delta", tmp_path / "rebuilt.safetensors", chunk_elems=chunk_elems + 17)
    rebuilt = read(tmp_path / "rebuilt.safetensors")
    assert set(rebuilt) == set(ft)
    for name in ft:
        assert same_bits(rebuilt[name], ft[name]), name
    assert weight_hash(open_checkpoint(tmp_path / "rebuilt.safetensors")) == report.finetuned_hash
    return report


@pytest.mark.parametrize("dtype", FLOATS)
def test_random_finetune_rebuilds_bit_for_bit(tmp_path, dtype):
    g = torch.Generator().manual_seed(3)
    pre = {"w": torch.randn(123, 45, generator=g).to(dtype), "b": torch.randn(45, generator=g).to(dtype)}
    ft = {k: (v.double() + 0.02 * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(dtype) for k, v in pre.items()}
    report = _roundtrip(tmp_path, pre, ft)
    assert report.delta_tensors == 2 and report.full_tensors == 0
    specs = open_checkpoint(tmp_path / "delta").specs
    assert specs["delta/w"].dtype == ("F64" if dtype == torch.float64 else "F32")


@pytest.mark.parametrize("dtype", FLOATS)
def test_adversarial_values_use_exact_fixups(tmp_path, dtype):
    pre, ft = adversarial(dtype, 4000, seed=5, nonfinite=True)
    report = _roundtrip(tmp_path, {"x": pre}, {"x": ft}, chunk_elems=333)
    assert report.delta_tensors == 1  # the specials are few: fixed up, not stored whole
    assert report.fixups >= 4  # at least the signed zeros and NaN/inf cases need them
    specs = open_checkpoint(tmp_path / "delta").specs
    assert specs["fix_index/x"].shape == (report.fixups,)


def test_signed_zero_needs_and_gets_a_fixup(tmp_path):
    pre = {"z": torch.zeros(64, dtype=torch.bfloat16)}
    ft = {"z": torch.zeros(64, dtype=torch.bfloat16)}
    ft["z"][3] = -0.0
    report = _roundtrip(tmp_path, pre, ft)
    assert report.fixups == 1
    assert read(tmp_path / "delta")["fix_index/z"].tolist() == [3]


def test_dense_fixups_store_the_tensor_whole(tmp_path):
    pre = {"z": torch.zeros(64, dtype=torch.float16)}
    ft = {"z": -torch.zeros(64, dtype=torch.float16)}
    report = _roundtrip(tmp_path, pre, ft)
    assert report.full_tensors == 1 and "full/z" in open_checkpoint(tmp_path / "delta").specs


def test_structure_changes_are_carried(tmp_path):
    pre = {"a": torch.ones(4), "gone": torch.ones(2), "steps": torch.tensor([5]), "reshaped": torch.ones(2, 3)}
    ft = {"a": torch.ones(4) * 2, "new": torch.arange(3), "steps": torch.tensor([9]), "reshaped": torch.ones(3, 2)}
    report = _roundtrip(tmp_path, pre, ft)
    assert report.removed == ["gone"]
    meta = open_checkpoint(tmp_path / "delta").metadata
    assert json.loads(meta["removed"]) == ["gone"] and meta["format"] == "retain-delta"


def test_sharded_inputs_and_outputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    pre = {f"l{i}.w": torch.randn(64, 64, generator=g).bfloat16() for i in range(6)}
    ft = {k: (v.float() + 0.1).bfloat16() for k, v in pre.items()}
    write(tmp_path / "pre", pre, max_shard_bytes=20000)
    write(tmp_path / "ft", ft, max_shard_bytes=20000)
    write_delta(tmp_path / "pre", tmp_path / "ft", tmp_path / "delta", max_shard_bytes=40000)
    assert len(open_checkpoint(tmp_path / "delta").files) > 1
    apply_delta(tmp_path / "pre", tmp_path / "delta", tmp_path / "out", max_shard_bytes=20000)
    assert weight_hash(open_checkpoint(tmp_path / "out")) == weight_hash(open_checkpoint(tmp_path / "ft"))


def test_wrong_parent_is_refused_and_nothing_written(tmp_path):
    pre = {"w": torch.ones(10)}
    ft = {"w": torch.ones(10) * 1.5}
    _roundtrip(tmp_path, pre, ft)
    write(tmp_path / "other.safetensors", {"w": torch.ones(10) * 3})
    with pytest.raises(RegistryError, match="made against parent"):
        apply_delta(tmp_path / "other.safetensors", tmp_path / "delta", tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_damaged_delta_is_detected(tmp_path):
    pre = {"w": torch.ones(10)}
    ft = {"w": torch.ones(10) * 1.5}
    _roundtrip(tmp_path, pre, ft)
    f = open_checkpoint(tmp_path / "delta").files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x40  # flip a bit in the last delta value
    f.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="damaged"):
        apply_delta(tmp_path / "pre.safetensors", tmp_path / "delta", tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_not_a_delta_is_refused(tmp_path):
    write(tmp_path / "pre.safetensors", {"w": torch.ones(2)})
    with pytest.raises(RegistryError, match="not a retain delta"):
        apply_delta(tmp_path / "pre.safetensors", tmp_path / "pre.safetensors", tmp_path / "x.safetensors")
