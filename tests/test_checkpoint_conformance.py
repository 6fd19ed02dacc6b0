"""The torch-free header parser against the reference `safetensors` reader, on a generated corpus.

Every file of the corpus (hand-written edge cases plus seeded random mutations of valid files) is
opened by registry.checkpoint.open_checkpoint and by safetensors.safe_open. The verdicts must
agree, except where the registry is stricter on purpose, and then its refusal must name one of
these rules: a name given twice (the reference keeps the last) and a dtype the registry does not
handle (complex and sub-byte floats). Whatever the registry accepts, the reference accepts too,
with the same bytes. A refusal is always one line naming the file.
"""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from registry.checkpoint import DTYPE_SIZES, open_checkpoint
from registry.errors import Code, RegistryError

safetensors = pytest.importorskip("safetensors")

STRICTER = {"twice": "a name given twice", "not one of": "a dtype the registry does not handle"}
T = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def _file(header, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _entry(dtype="F32", shape=(1,), offsets=(0, 4), **extra) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets), **extra}


HAND: list[tuple[str, bytes]] = [
    ("valid", _file({"a": T}, b"\0" * 4)),
    ("empty-header", _file({})),
    ("empty-header-padded", _file("{}      ")),
    ("only-metadata", _file({"__metadata__": {"format": "pt"}})),
    ("metadata-null", _file({"__metadata__": None, "a": T}, b"\0" * 4)),
    ("metadata-int-value", _file({"__metadata__": {"k": 1}, "a": T}, b"\0" * 4)),
    ("metadata-map-of-maps", _file({"__metadata__": {"k": {"x": "y"}}, "a": T}, b"\0" * 4)),
    ("metadata-list", _file({"__metadata__": ["x"], "a": T}, b"\0" * 4)),
    ("metadata-string", _file({"__metadata__": "x", "a": T}, b"\0" * 4)),
    ("negative-dim", _file({"a": _entry(shape=(-1,))}, b"\0" * 4)),
    ("negative-zero-dim", _file('{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}')),
    ("negative-offset", _file({"a": _entry(offsets=(-4, 0))}, b"\0" * 4)),
    ("end-before-begin", _file({"a": _entry(shape=(0,), offsets=(4, 0))}, b"\0" * 4)),
    ("overlap", _file({"a": T, "b": T}, b"\0" * 4)),
    ("overlap-partial", _file({"a": _entry(shape=(2,), offsets=(0, 8)), "b": _entry(offsets=(4, 8))}, b"\0" * 8)),
    ("gap", _file({"a": T, "b": _entry(offsets=(8, 12))}, b"\0" * 12)),
    ("gap-at-start", _file({"a": _entry(offsets=(4, 8))}, b"\0" * 8)),
    ("trailing-byte", _file({"a": T}, b"\0" * 5)),
    ("truncated", _file({"a": T}, b"\0" * 3)),
    ("shape-string", _file({"a": _entry(shape="1")}, b"\0" * 4)),
    ("shape-float", _file({"a": _entry(shape=(1.0,))}, b"\0" * 4)),
    ("shape-bool", _file({"a": _entry(shape=(True,))}, b"\0" * 4)),
    ("shape-null", _file({"a": {"dtype": "F32", "shape": None, "data_offsets": [0, 4]}}, b"\0" * 4)),
    ("shape-overflow", _file({"a": _entry(shape=(2**64 - 1, 2))}, b"\0" * 4)),
    ("dim-beyond-u64", _file({"a": _entry(shape=(2**64,))}, b"\0" * 4)),
    ("scalar", _file({"a": _entry(shape=())}, b"\0" * 4)),
    ("zero-size-first", _file({"z": _entry(shape=(0,), offsets=(0, 0)), "a": T}, b"\0" * 4)),
    ("zero-size-last", _file({"z": _entry(shape=(0,), offsets=(4, 4)), "a": T}, b"\0" * 4)),
    ("size-mismatch", _file({"a": _entry(shape=(2,))}, b"\0" * 4)),
    ("offsets-three", _file({"a": _entry(offsets=(0, 4, 4))}, b"\0" * 4)),
    ("offsets-strings", _file({"a": _entry(offsets=("0", "4"))}, b"\0" * 4)),
    ("dtype-unknown", _file({"a": _entry(dtype="X9")}, b"\0" * 4)),
    ("dtype-lowercase", _file({"a": _entry(dtype="f32")}, b"\0" * 4)),
    ("dtype-number", _file({"a": _entry(dtype=4)}, b"\0" * 4)),
    ("dtype-complex", _file({"a": _entry(dtype="C64", offsets=(0, 8))}, b"\0" * 8)),
    ("dtype-f8-e8m0", _file({"a": _entry(dtype="F8_E8M0", offsets=(0, 1))}, b"\0")),
    ("bf16", _file({"a": _entry(dtype="BF16", offsets=(0, 2))}, b"\0" * 2)),
    ("f8-e4m3", _file({"a": _entry(dtype="F8_E4M3", offsets=(0, 1))}, b"\0")),
    ("entry-missing-dtype", _file({"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)),
    ("entry-extra-field", _file({"a": {**T, "note": 1}}, b"\0" * 4)),
    ("entry-not-object", _file({"a": 5})),
    ("header-list", _file("[]")),
    ("header-not-json", _file("{nope", b"")),
    ("header-bom", _file("\ufeff" + json.dumps({"a": T}), b"\0" * 4)),
    ("header-trailing-nul", _file(json.dumps({"a": T}) + "\0", b"\0" * 4)),
    ("header-whitespace", _file("\t " + json.dumps({"a": T}) + "\r\n", b"\0" * 4)),
    ("header-nan", _file('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', b"\0" * 4)),
    ("header-invalid-utf8", _file(b'{"\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
    ("header-length-zero", struct.pack("<Q", 0)),
    ("header-length-huge", struct.pack("<Q", 2**63) + b"{}"),
    ("too-short", b"\x01\x02"),
    ("lone-surrogate-name", _file('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
    ("surrogate-pair-name", _file('{"\\ud83d\\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
    ("name-with-newline", _file({"a\nb": T}, b"\0" * 4)),
    ("empty-name", _file({"": T}, b"\0" * 4)),
    ("duplicate-name", _file('{"a":' + json.dumps(T) + ',"a":' + json.dumps(T) + "}", b"\0" * 4)),
    ("duplicate-field", _file('{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
    ("duplicate-metadata", _file('{"__metadata__":{},"__metadata__":{},"a":' + json.dumps(T) + "}", b"\0" * 4)),
    ("duplicate-metadata-key", _file('{"__metadata__":{"k":"1","k":"2"},"a":' + json.dumps(T) + "}", b"\0" * 4)),
]


def _valid(rng: random.Random) -> tuple[dict, bytes]:
    header, at = {"__metadata__": {"format": "pt"}}, 0
    for i in range(rng.randint(1, 4)):
        dtype = rng.choice(sorted(DTYPE_SIZES))
        shape = [rng.randint(0 if rng.random() < 0.1 else 1, 4) for _ in range(rng.randint(0, 3))]
        n = int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZES[dtype]
        header[f"t{i}.w"] = _entry(dtype, shape, (at, at + n))
        at += n
    return header, bytes(rng.getrandbits(8) for _ in range(at))


def _mutate(rng: random.Random, header: dict, data: bytes) -> tuple[dict, bytes]:
    names = [k for k in header if k != "__metadata__"]
    e = header[rng.choice(names)]
    kind = rng.randrange(12)
    if kind == 0:
        e["data_offsets"][rng.randrange(2)] += rng.choice([-3, -1, 1, 2, 8])
    elif kind == 1 and e["shape"]:
        e["shape"][rng.randrange(len(e["shape"]))] += rng.choice([-9, -1, 1])
    elif kind == 2:
        e["dtype"] = rng.choice([*DTYPE_SIZES, "C64", "F4", "Q8", "float32"])
    elif kind == 3:
        data += b"\0" * rng.randint(1, 9)
    elif kind == 4 and data:
        data = data[: -rng.randint(1, len(data))]
    elif kind == 5:
        header["__metadata__"] = rng.choice([{"k": 1}, {"k": None}, {"k": ["x"]}, [], "x", None, {}, {"k": {"a": "b"}}])
    elif kind == 6 and len(names) > 1:  # two tensors swap ranges (and so, maybe, their sizes)
        a, b = rng.sample(names, 2)
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    elif kind == 7 and len(names) > 1:  # two tensors claim the same bytes
        a, b = rng.sample(names, 2)
        header[b] = json.loads(json.dumps(header[a]))
    elif kind == 8 and len(names) > 1:  # one entry dropped: a gap, or bytes after the end
        del header[rng.choice(names)]
    elif kind == 9:
        e["shape"] = rng.choice([str(e["shape"]), [float(d) for d in e["shape"]] or [1.5], None, {"0": 1}])
    elif kind == 10:
        e["data_offsets"] = rng.choice([e["data_offsets"] + [0], [str(x) for x in e["data_offsets"]], e["data_offsets"][:1]])
    else:  # a valid file, shuffled key order (order does not matter to either reader)
        header = dict(rng.sample(list(header.items()), len(header)))
    return header, data


def _corpus() -> list[tuple[str, bytes]]:
    rng = random.Random(20261204)
    out = list(HAND)
    for i in range(300):
        header, data = _valid(rng)
        for _ in range(rng.randint(0, 2)):
            header, data = _mutate(rng, header, data)
        out.append((f"gen{i}", _file(header, data)))
    return out


def _reference_accepts(path: Path) -> bool:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            for k in f.keys():
                f.get_slice(k).get_shape()
            f.metadata()
    except Exception:  # the reference's refusals come as several exception types
        return False
    return True


def _ours(path: Path) -> tuple[bool, str]:
    try:
        with open_checkpoint(path) as ck:
            for name in ck.names:
                ck.read(name)
    except RegistryError as e:
        assert e.code in (Code.INVALID_VALUE, Code.NOT_FOUND), e
        return False, str(e)
    return True, ""


def test_parser_agrees_with_the_reference_reader(tmp_path):
    counts = {"both accept": 0, "both refuse": 0, "stricter": 0}
    for name, blob in _corpus():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        ours, message = _ours(path)
        ref = _reference_accepts(path)
        if not ours:
            assert "\n" not in message and str(path) in message, (name, message)
        if ours == ref:
            counts["both accept" if ours else "both refuse"] += 1
            if ours:
                _same_bytes_as_reference(path)
            continue
        assert not ours and ref, f"{name}: the registry accepts a file the reference refuses"
        assert any(k in message for k in STRICTER), f"{name}: refused but the reference accepts it: {message}"
        counts["stricter"] += 1
    assert counts["both accept"] >= 60 and counts["both refuse"] >= 120, counts


def _same_bytes_as_reference(path: Path) -> None:
    from safetensors.numpy import load_file

    with open_checkpoint(path) as ck:
        if any(ck.specs[n].dtype in ("BF16", "F8_E4M3", "F8_E5M2") for n in ck.names):
            return  # numpy has no such dtype; the reference reader cannot hand them over
        ref = load_file(str(path))
        assert sorted(ref) == ck.names
        for n in ck.names:
            assert np.ascontiguousarray(ref[n]).tobytes() == bytes(ck.read(n)), n


S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def _shards(tmp_path: Path, weight_map: dict) -> Path:
    from registry.checkpoint import save_tensors

    tmp_path.mkdir(exist_ok=True)
    folder = tmp_path / "sharded"
    save_tensors(folder, {"a": ("F32", (4,), b"\0" * 16), "b": ("F32", (4,), b"\0" * 16), "c": ("F32", (8,), b"\0" * 32)},
                 max_shard_bytes=32)  # shards: [a, b], [c]
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("weight_map, needle", [
    ({"a": S1, "b": S1, "c": S2, "d": S1}, f"weight_map puts tensor 'd' in {S1}, which does not hold it"),
    ({"a": S1, "b": S2, "c": S2}, f"weight_map puts tensor 'b' in {S2}, but it is in {S1}"),
    ({"a": S1, "c": S2}, f"tensor 'b' of {S1} is missing from weight_map"),
    ({"a": 1}, "'weight_map' must map tensor names to shard file names"),
])
def test_sharded_index_must_agree_with_its_shards(tmp_path, weight_map, needle):
    open_checkpoint(_shards(tmp_path / "good", {"a": S1, "b": S1, "c": S2})).close()
    folder = _shards(tmp_path, weight_map)
    with pytest.raises(RegistryError) as e:
        open_checkpoint(folder)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_written_checkpoint_satisfies_both_readers(tmp_path):
    from registry.checkpoint import save_tensors

    for i, shard in enumerate([None, 40]):
        dest = save_tensors(tmp_path / f"w{i}", {"a": ("F32", (3,), b"\1" * 12), "b": ("I64", (2,), b"\2" * 16),
                                                 "e": ("F32", (0,), b"")}, max_shard_bytes=shard)
        with open_checkpoint(dest) as ck:
            for f in ck.files:
                assert _reference_accepts(f) and _ours(f)[0]
