"""Safetensors checkpoints without torch: read, write, shard, hash.

A checkpoint is one `.safetensors` file or a folder holding `model.safetensors` or shards listed
by a Hugging Face `*.safetensors.index.json`. Tensors are handled as raw little-endian bytes
(memory-mapped on read), so bf16 and every other dtype pass through untouched and the registry
never needs torch.

The weight hash is canonical: it covers each tensor's name, dtype, shape and bytes in name order,
so the same weights hash the same however they are sharded or ordered inside files.

Example:
    >>> ckpt = open_checkpoint("model_dir")           # file or sharded folder
    >>> ckpt.specs["vision.conv.weight"].shape
    >>> weight_hash(ckpt)
    'sha256:...'
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from registry.errors import RegistryError, already_exists, corrupt, invalid, not_found
from registry.files import check_regular, open_regular, read_regular, unreadable

INDEX_SUFFIX = ".safetensors.index.json"
SINGLE_NAME = "model.safetensors"
INDEX_NAME = "model" + INDEX_SUFFIX

DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_MAX_HEADER = 100_000_000  # safetensors' own limit (bytes)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Where one tensor lives: its dtype code (safetensors spelling), shape, file and byte range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str = ""
    offset: int = 0  # absolute offset in `file`

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES[self.dtype]


class Checkpoint:
    """An opened checkpoint: `specs` maps name -> TensorSpec; `read(name)` gives its bytes.

    Use as a context manager (or call `close()`) to release the memory maps.
    """

    def __init__(self, path: Path, specs: dict[str, TensorSpec], files: list[Path], metadata: dict[str, str]):
        self.path = path
        self.specs = specs
        self.files = files
        self.metadata = metadata
        self._maps: dict[str, mmap.mmap] = {}
        self._handles: list = []

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view still lives (say, in an error's traceback): the map closes with it
                pass
        for f in self._handles:
            f.close()
        self._maps.clear()
        self._handles.clear()

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs.values())

    def read(self, name: str) -> memoryview:
        """The tensor's raw bytes, a zero-copy view into the memory-mapped file."""
        spec = self.specs[name]
        if spec.nbytes == 0:
            return memoryview(b"")
        m = self._maps.get(spec.file)
        if m is None:
            f = open(spec.file, "rb")
            self._handles.append(f)
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[spec.file] = m
        return memoryview(m)[spec.offset : spec.offset + spec.nbytes]

    def array(self, name: str) -> np.ndarray:
        """The tensor as a read-only numpy array (bf16 and fp8 come back as their raw unsigned ints)."""
        spec = self.specs[name]
        return np.frombuffer(self.read(name), dtype=numpy_storage_dtype(spec.dtype)).reshape(spec.shape)


def numpy_storage_dtype(dtype: str) -> np.dtype:
    """A numpy dtype with the same bytes: exact for most, raw unsigned ints for BF16 / FP8."""
    table = {
        "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
        "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
        "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
        "BOOL": "?", "F8_E4M3": "u1", "F8_E5M2": "u1",
    }
    return np.dtype(table[dtype])


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Raw BF16 bit patterns (uint16) as float32 values, exactly: BF16 is float32's high half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------------------------- reading

_USIZE_MAX = (1 << 64) - 1  # the reference reader holds shapes, offsets and sizes in a u64
_FIX = "re-save it with safetensors"


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class _Signed(int):
    """A JSON integer written with a minus sign (even -0, which the reference reads as a float)."""


def _int(text: str) -> int:
    return _Signed(text) if text.startswith("-") else int(text)


def _load_json(raw: bytes | str):
    """json.loads as strict as serde_json: no NaN/Infinity, no repeated keys, no -0 as an integer."""
    return json.loads(raw, object_pairs_hook=_pairs, parse_constant=_no_constant, parse_int=_int)


def _is_uint(x) -> bool:
    return type(x) is int and 0 <= x <= _USIZE_MAX


def _has_lone_surrogate(obj) -> bool:
    """JSON escapes such as \\ud800 decode in Python but are not text; the reference refuses them."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False


def parse_header(file: str | os.PathLike, raw: bytes, size: int) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """Check one safetensors file's header against the format and return its tensors and metadata.

    `raw` is the JSON header, `size` the whole file's length. The rules are the reference
    reader's (safetensors' `SafeTensors::read_metadata` and `Metadata::validate`): a JSON object
    of tensor entries plus an optional `__metadata__` map of strings to strings; each entry a
    known dtype, a shape of non-negative integers and two non-negative offsets; dtype size times
    shape equals each byte range; sorted by offset, the ranges start at 0, follow each other with
    no gap or overlap and end exactly at the end of the file. Stricter than the reference (it
    takes the last of two equal names): a name appears once. Every refusal is one INVALID line
    naming the file, the tensor and the rule.
    """
    def bad(rule: str, name: str | None = None) -> RegistryError:
        where = f"tensor {name!r} " if name is not None else ""
        return invalid(f"{file}: {where}{rule}; {_FIX}")

    try:
        text = raw.decode("utf-8")
        header = _load_json(text)
    except _Duplicate as e:
        raise bad(f"the header names {str(e)!r} twice (a name or field appears once)") from None
    except (UnicodeDecodeError, ValueError):
        raise invalid(f"{file} is not a safetensors file (its header is not JSON text); pass a .safetensors file or a folder of them") from None
    if not isinstance(header, dict):
        raise invalid(f"{file} is not a safetensors file (its header is not a JSON object); pass a .safetensors file or a folder of them")
    if _has_lone_surrogate(header):
        raise bad("the header holds an unpaired UTF-16 surrogate escape, which is not text")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")
    data_start = 8 + len(raw)
    specs: dict[str, TensorSpec] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not all(k in entry for k in ("dtype", "shape", "data_offsets")):
            raise bad("needs an object with dtype, shape and data_offsets", name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise bad(f"has dtype {dtype!r}, not one of {', '.join(DTYPE_SIZES)}", name)
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise bad(f"has shape {shape!r}; a shape is a list of non-negative integers", name)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(x) for x in offsets):
            raise bad(f"has data_offsets {offsets!r}; they are two non-negative integers [begin, end]", name)
        begin, end = offsets
        spec = TensorSpec(name, dtype, tuple(shape), str(file), data_start + begin)
        if spec.numel > _USIZE_MAX or spec.nbytes > _USIZE_MAX:
            raise bad(f"has shape {shape} whose size overflows 64 bits", name)
        if end < begin:
            raise bad(f"has data_offsets [{begin}, {end}] that end before they begin", name)
        if end - begin != spec.nbytes:
            raise bad(f"has data_offsets [{begin}, {end}] ({end - begin} bytes) but dtype {dtype} x shape {shape} "
                      f"is {spec.nbytes} bytes", name)
        specs[name] = spec
        ranges.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(ranges):
        if begin > at:
            raise bad(f"starts at byte {begin} but the previous tensor ends at {at} (tensors leave no gap)", name)
        if begin < at:
            raise bad(f"starts at byte {begin}, inside the previous tensor's bytes (which end at {at}; tensors do not overlap)", name)
        at = end
    if data_start + at < size:
        raise invalid(f"{file} has {size - data_start - at} byte(s) after its last tensor (the data ends at byte "
                      f"{data_start + at} of {size}); {_FIX}")
    if data_start + at > size:
        raise invalid(f"{file} is truncated: its header needs {data_start + at} bytes but the file has {size}; copy or download it again")
    return specs, metadata


def _read_header(file: Path) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    with open_regular(file, "checkpoint file") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise invalid(f"{file} is not a safetensors file (too short for a header); pass a .safetensors file or a folder of them")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise invalid(f"{file} is not a safetensors file (bad header length {n}); pass a .safetensors file or a folder of them")
        raw = f.read(n)
    return parse_header(file, raw, size)


def _read_index(index: Path) -> dict[str, str]:
    """The weight_map of a Hugging Face index: tensor name -> shard file name."""
    try:
        weight_map = _load_json(read_regular(index, "index"))["weight_map"]
    except _Duplicate as e:
        raise invalid(f"{index} names {str(e)!r} twice; regenerate the index") from None
    except (KeyError, TypeError, ValueError):
        raise invalid(f"{index} is not a valid Hugging Face index (needs a 'weight_map'); regenerate it") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise invalid(f"{index}: 'weight_map' must map tensor names to shard file names; regenerate it")
    return weight_map


def resolve_files(path: str | os.PathLike) -> list[Path]:
    """The safetensors files that make up the checkpoint at `path` (a file or a folder)."""
    return _resolve(path)[0]


def _resolve(path: str | os.PathLike) -> tuple[list[Path], Optional[tuple[Path, dict[str, str]]]]:
    """(files, (index, weight_map) or None) of the checkpoint at `path`."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise not_found(f"checkpoint {p} is a symbolic link to a missing file; point it at a real checkpoint") from None
        raise not_found(f"checkpoint {p} does not exist; pass a .safetensors file or a folder holding one") from None
    except OSError as e:
        raise unreadable(p, "checkpoint", e) from None
    if not stat.S_ISDIR(st.st_mode):
        check_regular(p, "checkpoint")
        return [p], None
    indexes = sorted(p.glob("*" + INDEX_SUFFIX))
    if indexes:
        index = indexes[0] if len(indexes) == 1 else p / INDEX_NAME
        if not index.exists():
            raise invalid(f"{p} holds several index files ({', '.join(i.name for i in indexes)}); keep one")
        weight_map = _read_index(index)
        files = []
        for n in sorted(set(weight_map.values())):
            if "/" in n or "\\" in n or n.startswith("."):
                raise invalid(f"{index} names shard {n!r} outside its folder; shards must sit beside the index")
            if not (p / n).exists():
                raise not_found(f"{index} lists shard {n} but {p / n} is missing; copy the whole checkpoint folder")
            check_regular(p / n, "shard")
            files.append(p / n)
        return files, (index, weight_map)
    single = p / SINGLE_NAME
    if os.path.lexists(single):
        check_regular(single, "checkpoint file")
        return [single], None
    found = sorted(p.glob("*.safetensors"))
    if len(found) == 1:
        check_regular(found[0], "checkpoint file")
        return found, None
    if not found:
        raise not_found(f"{p} holds no .safetensors file; pass a checkpoint file or a folder holding one")
    raise invalid(f"{p} holds several .safetensors files but no {INDEX_NAME}; add the index or pass one file")


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open the checkpoint at `path` (file or folder) after validating every header.

    Raises RegistryError (not found / invalid) for missing, non-regular, non-safetensors,
    truncated or inconsistent inputs, naming the file, the tensor and the rule.
    """
    files, index = _resolve(path)
    specs: dict[str, TensorSpec] = {}
    metadata: dict[str, str] = {}
    for f in files:
        s, m = _read_header(f)
        for name in s:
            if name in specs:
                raise invalid(f"tensor {name!r} appears in both {specs[name].file} and {f}; a checkpoint names each tensor once")
        specs.update(s)
        metadata.update(m)
    if index is not None:
        _check_weight_map(*index, specs)
    return Checkpoint(Path(path), specs, files, metadata)


def _check_weight_map(index: Path, weight_map: dict[str, str], specs: dict[str, TensorSpec]) -> None:
    """The index and the shards must agree on where every tensor lives, as loaders trust the index."""
    for name, shard in sorted(weight_map.items()):
        spec = specs.get(name)
        if spec is None:
            raise invalid(f"{index}: weight_map puts tensor {name!r} in {shard}, which does not hold it; regenerate the index")
        if Path(spec.file).name != shard:
            raise invalid(f"{index}: weight_map puts tensor {name!r} in {shard}, but it is in {Path(spec.file).name}; regenerate the index")
    extra = sorted(set(specs) - set(weight_map))
    if extra:
        raise invalid(f"{index}: tensor {extra[0]!r} of {Path(specs[extra[0]].file).name} is missing from weight_map "
                      f"({len(extra)} such); regenerate the index")


# ---------------------------------------------------------------------------------------- checks


def nonfinite_tensors(ckpt: Checkpoint, limit: int = 5) -> list[str]:
    """Names (at most `limit`) of floating tensors holding NaN or inf."""
    bad = []
    for name in ckpt.names:
        spec = ckpt.specs[name]
        if spec.dtype not in FLOAT_DTYPES or spec.numel == 0:
            continue
        if not bytes_are_finite(ckpt.read(name), spec.dtype):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def bytes_are_finite(buf, dtype: str) -> bool:
    a = np.frombuffer(buf, dtype=numpy_storage_dtype(dtype))
    if dtype == "BF16":
        return not bool(np.any((a & 0x7F80) == 0x7F80))
    if dtype == "F8_E4M3":  # no inf; NaN is S.1111.111
        return not bool(np.any((a & 0x7F) == 0x7F))
    if dtype == "F8_E5M2":
        return not bool(np.any((a & 0x7C) == 0x7C))
    return bool(np.isfinite(a).all())


# ---------------------------------------------------------------------------------------- hashing


def weight_hash(ckpt: Checkpoint) -> str:
    """Canonical sha256 over (name, dtype, shape, bytes) in name order; sharding does not matter."""
    h = hashlib.sha256()
    for name in ckpt.names:
        spec = ckpt.specs[name]
        h.update(spec_line(spec))
        h.update(ckpt.read(name))
    return "sha256:" + h.hexdigest()


def spec_line(spec: TensorSpec) -> bytes:
    """One tensor's entry in the canonical weight hash (what precedes its bytes)."""
    return json.dumps([spec.name, spec.dtype, list(spec.shape), spec.nbytes]).encode() + b"\n"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- writing


def shard_layout(specs: Iterable[TensorSpec], max_shard_bytes: int | None) -> list[list[TensorSpec]]:
    """Split tensors, in the given order, into shards of at most `max_shard_bytes` (one shard if None).

    A tensor larger than the limit gets a shard of its own, as Hugging Face does.
    """
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if max_shard_bytes and shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


class CheckpointWriter:
    """Streams tensors into a safetensors file or sharded folder, then publishes it atomically.

    The layout (names, dtypes, shapes, order) is fixed up front so each header is written first
    and tensor bytes go straight to disk: memory stays at one tensor, whatever the model size.
    Nothing appears under `dest` until `commit()`; `abort()` (or an exception inside `with`)
    removes the temporary files.

    Example:
        >>> with CheckpointWriter("out", specs, max_shard_bytes=2 << 30) as w:
        ...     for spec in specs:
        ...         w.write(spec.name, raw_bytes_for(spec))
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        specs: list[TensorSpec],
        max_shard_bytes: int | None = None,
        metadata: Mapping[str, str] | None = None,
        single_file: bool | None = None,
        extra_files: Mapping[str, bytes] | None = None,
    ):
        self.dest = Path(dest)
        if self.dest.exists():
            raise already_exists(f"output {self.dest} already exists; choose a new path or remove it first")
        if not self.dest.parent.exists():
            raise not_found(f"output folder {self.dest.parent} does not exist; create it first")
        self.shards = shard_layout(specs, max_shard_bytes)
        self.single_file = (len(self.shards) == 1 and self.dest.suffix == ".safetensors") if single_file is None else single_file
        if self.single_file and len(self.shards) > 1:
            raise invalid(f"{self.dest} is a single file but the layout needs {len(self.shards)} shards; give a folder")
        # Files published with a folder checkpoint in the same rename (config.json); a single file has no room for them.
        self.extra_files = {} if self.single_file else dict(extra_files or {})
        self.metadata = dict(metadata or {"format": "pt"})
        self._order = [s.name for shard in self.shards for s in shard]
        self._specs = {s.name: s for shard in self.shards for s in shard}
        self._shard_of = {s.name: i for i, shard in enumerate(self.shards) for s in shard}
        self._next = 0
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-", dir=self.dest.parent))
        self._shard_names = self._names_for_shards()
        self._handle = None
        self._shard_i = -1
        self._done = False

    def _names_for_shards(self) -> list[str]:
        if self.single_file:
            return [self.dest.name]
        n = len(self.shards)
        if n == 1:
            return [SINGLE_NAME]
        return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _close_shard(self) -> None:
        # Every shard reaches the disk before the rename publishes it, not only the last one.
        if self._handle:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def _open_shard(self, i: int) -> None:
        self._close_shard()
        header: dict = {"__metadata__": self.metadata}
        offset = 0
        for spec in self.shards[i]:
            header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # keep data 8-byte aligned, as safetensors does
        self._handle = open(self._tmp / self._shard_names[i], "wb")
        self._handle.write(struct.pack("<Q", len(blob)))
        self._handle.write(blob)
        self._shard_i = i

    def write(self, name: str, data) -> None:
        """Write the next tensor's raw bytes; tensors must come in layout order."""
        self.write_parts(name, (data,))

    def write_parts(self, name: str, parts: Iterable) -> None:
        """Write the next tensor as consecutive byte pieces, so a huge tensor never sits in memory whole."""
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise ValueError(f"tensor {name!r} written out of order; expected {expected!r}")
        spec = self._specs[name]
        shard_i = self._shard_of[name]
        if shard_i != self._shard_i:
            self._open_shard(shard_i)
        written = 0
        for part in parts:
            mv = memoryview(part).cast("B")
            written += mv.nbytes
            if written > spec.nbytes:
                raise ValueError(f"tensor {name!r} has more than the {spec.nbytes} bytes its layout says")
            self._handle.write(mv)
        if written != spec.nbytes:
            raise ValueError(f"tensor {name!r} has {written} bytes, layout says {spec.nbytes}")
        self._next += 1

    def commit(self) -> Path:
        """Flush, fsync and move the finished checkpoint to `dest` in one rename."""
        if self._done:
            return self.dest
        if self._next != len(self._order):
            self.abort()
            raise ValueError(f"checkpoint incomplete: {len(self._order) - self._next} tensors not written")
        if self._shard_i < 0:  # a checkpoint with no tensors still gets its (empty) file
            self._open_shard(0)
        for i in range(self._shard_i + 1, len(self.shards)):  # trailing shards of empty tensors
            self._open_shard(i)
        self._close_shard()
        if self.single_file:
            os.replace(self._tmp / self.dest.name, self.dest)
            os.rmdir(self._tmp)
        else:
            if len(self.shards) > 1:
                weight_map = {s.name: self._shard_names[i] for i, shard in enumerate(self.shards) for s in shard}
                index = {"metadata": {"total_size": sum(s.nbytes for s in self._specs.values())}, "weight_map": weight_map}
                with open(self._tmp / INDEX_NAME, "w") as f:
                    f.write(json.dumps(index, indent=2, sort_keys=True))
                    f.flush()
                    os.fsync(f.fileno())
            for fname, data in self.extra_files.items():
                with open(self._tmp / fname, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            os.rename(self._tmp, self.dest)
        self._done = True
        return self.dest

    def abort(self) -> None:
        if self._handle:
            self._handle.close()
            self._handle = None
        if self._tmp.exists():
            for f in self._tmp.iterdir():
                f.unlink()
            self._tmp.rmdir()
        self._done = True


def save_tensors(
    dest: str | os.PathLike,
    tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]],
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `{name: (dtype, shape, raw_bytes)}` as a file (dest ends in .safetensors) or a folder."""
    specs = [TensorSpec(n, d, tuple(s)) for n, (d, s, _) in sorted(tensors.items())]
    with CheckpointWriter(dest, specs, max_shard_bytes, metadata) as w:
        for spec in specs:
            w.write(spec.name, tensors[spec.name][2])
    return Path(dest)


def checkpoint_bytes(path: str | os.PathLike) -> int:
    """Bytes of a safetensors file or of every file in a checkpoint folder."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
