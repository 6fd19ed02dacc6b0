"""Weights stored against a reference: their distance in units in the last place, byte planes split, zstd-compressed.

A learned version differs from its parent only by what the finetune moved, and a bf16 weight that
moved by a few units in the last place (ulps) is a few steps away in the float's ordered integer
code. So each float element is stored as that step count (target's ordered code minus the
reference's, modulo 2^bits, zigzag-coded so small moves either way are small numbers); other
dtypes as the XOR of their bits. Either way most bytes are zero, and once the bytes of each
element are split into planes (all high bytes, then all low bytes) zstd packs them to a fraction
of a checkpoint (a bf16 move of 1% of the weights' scale: 0.30 of its bytes; XOR alone: 0.34).
Nothing here is float arithmetic, only integer steps, so `unpack` rebuilds the target bit for bit
on any machine, and it publishes nothing unless the rebuilt weights hash to the recorded target hash.

A pack is a safetensors checkpoint (file or folder) holding, per tensor of the target:

    code/<name>    U8 (n,): the tensor's chunks, each zstd(byte planes of the steps, or of the XOR)
    sizes/<name>   I64 (chunks,): compressed length of each chunk (chunks of CHUNK_ELEMS elements)
    full/<name>    the target's tensor as is: new tensors, ones with another dtype or shape, empty ones

Metadata: format and version, the codec, the chunk size, the tensors the target dropped, and the
canonical weight hashes of reference and target. Memory stays at a few chunks, whatever the model.

Example:
    >>> write_pack("v2/", "v3/", "pack/")        # v3 stored against its parent v2
    >>> unpack("v2/", "pack/", "rebuilt/")      # weight_hash(rebuilt) == weight_hash(v3)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from registry.checkpoint import Checkpoint, CheckpointWriter, DTYPE_SIZES, TensorSpec, open_checkpoint, spec_line
from registry.errors import corrupt, invalid

FORMAT = "retain-pack"
VERSION = "1"
CODEC = "zstd"
LEVEL = 1  # level 3 packs bf16 codes no smaller (within 1-2%, measured) at half the speed
CHUNK_ELEMS = 1 << 22  # 8 MiB of bf16 per chunk: large enough for zstd, small enough for memory


@dataclasses.dataclass(frozen=True)
class PackReport:
    dest: str
    tensors: int  # tensors of the target
    coded_tensors: int  # stored as compressed codes against the reference
    stored_bytes: int  # bytes of tensor data in the pack
    target_bytes: int  # bytes of tensor data in the target
    reference_hash: str
    target_hash: str


def _codec():
    import pyarrow  # zstd through pyarrow, already a dependency (LeRobot parquet); no new package

    return pyarrow.Codec(CODEC, compression_level=LEVEL)


def is_pack(path: str | os.PathLike) -> bool:
    with open_checkpoint(path) as ck:
        return ck.metadata.get("format") == FORMAT


def _fits(ref: TensorSpec | None, spec: TensorSpec) -> bool:
    return ref is not None and ref.dtype == spec.dtype and ref.shape == spec.shape and spec.numel > 0


_UINT = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_STEPPED = {"BF16", "F16", "F32"}  # floats coded as ordered-integer steps; other dtypes as XOR


def _ordered(u: np.ndarray) -> np.ndarray:
    """The float bits as integers that sort like the floats (negatives flipped, positives offset)."""
    top = u.dtype.type(1 << (8 * u.dtype.itemsize - 1))
    return np.where(u & top, ~u, u | top)


def _unordered(o: np.ndarray) -> np.ndarray:
    top = o.dtype.type(1 << (8 * o.dtype.itemsize - 1))
    return np.where(o & top, o ^ top, ~o)


def _encode(ref: np.ndarray, tgt: np.ndarray, dtype: str) -> np.ndarray:
    """The bytes of the target relative to the reference (both raw uint8), before compression."""
    if dtype not in _STEPPED:
        return np.bitwise_xor(ref, tgt)
    u = _UINT[DTYPE_SIZES[dtype]]
    d = _ordered(tgt.view(u)) - _ordered(ref.view(u))  # wraps modulo 2^bits
    bits = 8 * u.itemsize
    s = d.view(u.str.replace("u", "i"))
    return ((s << 1) ^ (s >> (bits - 1))).view(np.uint8)  # zigzag: -1 -> 1, 1 -> 2, ...


def _decode(ref: np.ndarray, code: np.ndarray, dtype: str) -> np.ndarray:
    if dtype not in _STEPPED:
        return np.bitwise_xor(ref, code)
    u = _UINT[DTYPE_SIZES[dtype]]
    z = code.view(u)
    d = (z >> u.type(1)) ^ (u.type(0) - (z & u.type(1)))
    return _unordered(_ordered(ref.view(u)) + d).view(np.uint8)


def _planes(code: np.ndarray, size: int) -> np.ndarray:
    """Element bytes split into planes: byte 0 of every element, then byte 1, ..."""
    return np.ascontiguousarray(code.reshape(-1, size).T) if size > 1 else code


def _unplanes(planes: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(planes.reshape(size, -1).T).reshape(-1) if size > 1 else planes


def _chunks(spec: TensorSpec):
    step = CHUNK_ELEMS * DTYPE_SIZES[spec.dtype]
    for start in range(0, spec.nbytes, step):
        yield start, min(step, spec.nbytes - start)


class _Hash:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def tensor(self, ck: Checkpoint, name: str) -> None:
        self.h.update(spec_line(ck.specs[name]))
        self.h.update(ck.read(name))

    def hexdigest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def write_pack(reference: str | os.PathLike, target: str | os.PathLike, dest: str | os.PathLike,
               max_shard_bytes: int | None = None, metadata: dict[str, str] | None = None) -> PackReport:
    """Store `target` against `reference` at `dest` (a file if it ends in .safetensors, else a folder).

    `metadata` (str -> str) is kept in the pack, say how to make the reference again."""
    codec = _codec()
    with open_checkpoint(reference) as ref, open_checkpoint(target) as tgt:
        removed = sorted(set(ref.specs) - set(tgt.specs))
        ref_h, tgt_h = _Hash(), _Hash()
        for name in sorted(ref.specs):
            ref_h.tensor(ref, name)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Compressed sizes are known only after compressing, and the safetensors header comes
        # first: spool the compressed chunks, then copy them into place.
        with tempfile.TemporaryFile(dir=dest.parent) as spool:
            sizes: dict[str, list[int]] = {}
            for name in sorted(tgt.specs):
                spec = tgt.specs[name]
                tgt_h.tensor(tgt, name)
                if not _fits(ref.specs.get(name), spec):
                    continue
                sizes[name] = _pack_tensor(ref, tgt, spec, codec, spool)
            specs: list[TensorSpec] = []
            for name in sorted(tgt.specs):
                spec = tgt.specs[name]
                if name in sizes:
                    specs += [TensorSpec(f"sizes/{name}", "I64", (len(sizes[name]),)),
                              TensorSpec(f"code/{name}", "U8", (sum(sizes[name]),))]
                else:
                    specs.append(TensorSpec(f"full/{name}", spec.dtype, spec.shape))
            metadata = {"format": FORMAT, "version": VERSION, "codec": f"{CODEC}-{LEVEL}", "chunk_elems": str(CHUNK_ELEMS),
                        "removed": json.dumps(removed), "reference_hash": ref_h.hexdigest(), "target_hash": tgt_h.hexdigest(),
                        **{f"reference_{k}": v for k, v in (metadata or {}).items()}}
            spool.seek(0)
            with CheckpointWriter(dest, sorted(specs, key=lambda s: s.name), max_shard_bytes, metadata) as w:
                for s in sorted(specs, key=lambda s: s.name):
                    kind, _, name = s.name.partition("/")
                    if kind == "full":
                        w.write(s.name, tgt.read(name))
                    elif kind == "sizes":
                        w.write(s.name, np.asarray(sizes[name], dtype="<i8"))
                    else:
                        w.write_parts(s.name, (spool.read(n) for n in sizes[name]))
    stored = sum(s.nbytes for s in specs)
    return PackReport(str(dest), len(tgt.specs), len(sizes), stored, sum(s.nbytes for s in tgt.specs.values()),
                      ref_h.hexdigest(), tgt_h.hexdigest())


def _pack_tensor(ref: Checkpoint, tgt: Checkpoint, spec: TensorSpec, codec, spool) -> list[int]:
    """Append one tensor's compressed chunks to `spool`; their lengths. (Its own function so no
    view into the memory maps outlives it: the checkpoints cannot close while one does.)"""
    size = DTYPE_SIZES[spec.dtype]
    a, b = ref.read(spec.name), tgt.read(spec.name)
    out = []
    for start, n in _chunks(spec):
        x = _encode(np.frombuffer(a[start:start + n], np.uint8), np.frombuffer(b[start:start + n], np.uint8), spec.dtype)
        z = codec.compress(_planes(x, size), asbytes=True)
        spool.write(z)
        out.append(len(z))
    return out


def pack_metadata(pack: str | os.PathLike) -> dict[str, str]:
    """What the caller of write_pack kept in it (`metadata`)."""
    with open_checkpoint(pack) as p:
        _check_format(p, pack)
        return {k[len("reference_"):]: v for k, v in p.metadata.items() if k.startswith("reference_") and k != "reference_hash"}


def pack_hashes(pack: str | os.PathLike) -> tuple[str, str]:
    """(reference hash, target hash) a pack records."""
    with open_checkpoint(pack) as p:
        _check_format(p, pack)
        return p.metadata["reference_hash"], p.metadata["target_hash"]


def _check_format(p: Checkpoint, path) -> None:
    if p.metadata.get("format") != FORMAT:
        raise invalid(f"{path} is not a retain pack (metadata format {p.metadata.get('format')!r})")
    if p.metadata.get("version") != VERSION or p.metadata.get("codec") != f"{CODEC}-{LEVEL}":
        raise invalid(f"{path} is pack format {p.metadata.get('version')} ({p.metadata.get('codec')}); "
                      f"this code reads version {VERSION} ({CODEC}-{LEVEL}): upgrade retain")


def unpack(reference: str | os.PathLike, pack: str | os.PathLike, dest: str | os.PathLike,
           max_shard_bytes: int | None = None) -> Path:
    """Rebuild the target at `dest` from `reference` and the pack, bit for bit.

    Raises INVALID if the pack was made against other weights, CORRUPT if it does not rebuild to
    its recorded target hash (nothing is published then).
    """
    codec = _codec()
    with open_checkpoint(reference) as ref, open_checkpoint(pack) as p:
        _check_format(p, pack)
        removed = set(json.loads(p.metadata.get("removed", "[]")))
        chunk_elems = int(p.metadata["chunk_elems"])
        out: dict[str, TensorSpec] = {}
        for key, spec in p.specs.items():
            kind, _, name = key.partition("/")
            if kind == "full":
                out[name] = TensorSpec(name, spec.dtype, spec.shape)
            elif kind == "code":
                r = ref.specs.get(name)
                if r is None:
                    raise invalid(f"pack {pack} stores {name} against a reference tensor {reference} lacks; "
                                  "unpack it against the weights it was made from")
                out[name] = TensorSpec(name, r.dtype, r.shape)
            elif kind != "sizes":
                raise invalid(f"{pack} holds unexpected tensor {key!r}; it is not a retain pack")
        strays = sorted(set(ref.specs) - set(out) - removed)
        if strays:
            raise invalid(f"pack {pack} says nothing about {strays[0]} of {reference}; unpack it against the weights it was made from")
        ref_h, out_h = _Hash(), _Hash()
        for name in sorted(ref.specs):
            ref_h.tensor(ref, name)
        if ref_h.hexdigest() != p.metadata.get("reference_hash"):
            raise invalid(f"pack {pack} was made against {p.metadata.get('reference_hash')} but {reference} is {ref_h.hexdigest()}; "
                          "unpack it against the weights it was made from")
        dest = Path(dest)
        specs = [out[n] for n in sorted(out)]
        with CheckpointWriter(dest, specs, max_shard_bytes) as w:
            for spec in specs:
                out_h.h.update(spec_line(spec))
                w.write_parts(spec.name, _rebuilt(ref, p, spec, chunk_elems, codec, out_h, pack))
        if out_h.hexdigest() != p.metadata.get("target_hash"):
            for f in (dest.iterdir() if dest.is_dir() else [dest]):
                f.unlink()
            if dest.is_dir():
                dest.rmdir()
            raise corrupt(f"pack {pack} rebuilt weights hashing {out_h.hexdigest()}, not the recorded "
                          f"{p.metadata.get('target_hash')}; the pack is damaged (run `retain verify`)")
    return dest


def _rebuilt(ref: Checkpoint, p: Checkpoint, spec: TensorSpec, chunk_elems: int, codec, out_h: _Hash, pack):
    if f"full/{spec.name}" in p.specs:
        data = p.read(f"full/{spec.name}")
        out_h.h.update(data)
        yield data
        return
    size = DTYPE_SIZES[spec.dtype]
    sizes = p.array(f"sizes/{spec.name}").copy()
    data = p.read(f"code/{spec.name}")
    a = ref.read(spec.name)
    pos = 0
    step = chunk_elems * size
    starts = list(range(0, spec.nbytes, step))
    if len(starts) != len(sizes) or int(sizes.sum()) != len(data):
        raise corrupt(f"pack {pack}: {spec.name}'s chunk table does not match its data; the pack is damaged (run `retain verify`)")
    for start, z in zip(starts, sizes):
        n = min(step, spec.nbytes - start)
        try:
            planes = np.frombuffer(codec.decompress(data[pos:pos + int(z)], decompressed_size=n, asbytes=True), np.uint8)
        except Exception as e:  # pyarrow raises its own OSError kinds for a bad frame
            raise corrupt(f"pack {pack}: {spec.name} does not decompress ({e}); the pack is damaged (run `retain verify`)") from None
        pos += int(z)
        if len(planes) != n:
            raise corrupt(f"pack {pack}: {spec.name} decompresses to {len(planes)} bytes, not {n}; the pack is damaged (run `retain verify`)")
        chunk = _decode(np.frombuffer(a[start:start + n], np.uint8), _unplanes(planes, size), spec.dtype)
        out_h.h.update(chunk)
        yield chunk
