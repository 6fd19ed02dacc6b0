"""Content-addressed blob store on any fsspec URL.

A blob lives at `blobs/<aa>/<sha256>`. Writes go to `tmp/<random>` and are then renamed (or put
in one call where the filesystem has no rename), so a reader never sees half a blob; an existing
blob is never overwritten, and on a local store it is read-only once written. Nothing found in
the store is trusted: a blob about to be reused is hashed first, reads hash every byte, and
either refuses a blob whose content does not match its name. A file that changes while it is
being stored is refused too. Folders (a checkpoint, a delta, a demo set) are stored as one blob per file plus a
manifest {relative path: (sha256, size)} whose own hash names the folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import uuid
from pathlib import Path
from typing import Iterator, Mapping, Optional

from registry.errors import already_exists, corrupt, invalid, not_found, unavailable
from registry.files import open_regular

CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class FolderManifest:
    """What a stored folder holds: relative path -> (blob sha256, size)."""

    files: dict[str, tuple[str, int]]

    @property
    def sha256(self) -> str:
        canon = json.dumps({p: list(v) for p, v in sorted(self.files.items())}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files.values())


def folder_listing(folder: str | os.PathLike) -> dict[str, Path]:
    """Every regular file under `folder`, by its POSIX path relative to `folder`."""
    root = Path(folder)
    if not root.is_dir():
        raise not_found(f"folder {root} does not exist; pass an existing folder")
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = p
    return out


class BlobStore:
    def __init__(self, url: str):
        import fsspec

        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as e:
            raise invalid(f"store URL {url!r} is not usable ({e}); pass a folder or an fsspec URL such as memory://store") from None
        self.root = root.rstrip("/")
        self._local = "file" in _protocols(self.fs)

    # ------------------------------------------------------------------ layout

    def path(self, sha: str) -> str:
        return f"{self.root}/blobs/{sha[:2]}/{sha}"

    def ensure_exists(self) -> None:
        """Create the store's folders (init); a store that cannot be written is UNAVAILABLE."""
        try:
            self.fs.makedirs(f"{self.root}/blobs", exist_ok=True)
            self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        except OSError as e:
            raise self._unwritable(e) from None

    def _unwritable(self, e: Exception) -> Exception:
        return unavailable(f"blob store {self.url} is not writable ({type(e).__name__}: {e}); fix its permissions or pass --store / RETAIN_STORE_URL")

    # ------------------------------------------------------------------ writing

    def put_file(self, src: str | os.PathLike) -> tuple[str, int]:
        """Store the file at `src`; returns (sha256, size). Idempotent: a present, intact blob is kept.

        A present blob whose bytes do not hash to its name is CORRUPT (left for the operator, as
        the message says); a new one is copied while hashed again, so a source that changed
        after the first hash never gets stored under the wrong name.
        """
        sha, size = file_digest(src)
        dest = self.path(sha)
        if self.fs.exists(dest):
            self._check_existing(sha, size)
            if self._local:  # restart gc's grace period: this blob is about to be referenced again
                try:
                    os.utime(dest)
                except OSError:  # a read-only store: gc cannot delete from it either
                    pass
            return sha, size
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
            self.fs.makedirs(f"{self.root}/blobs/{sha[:2]}", exist_ok=True)
            if self._local:
                copied = _copy_fsync(Path(src), Path(tmp))
                os.chmod(tmp, 0o444)
            else:
                self.fs.put_file(str(src), tmp)
                copied = (sha, size)  # the upload is checked on every read instead
            if copied != (sha, size):
                self._discard(tmp)
                raise invalid(f"file {src} changed while it was being stored (it hashed to {sha}, then to {copied[0]}); "
                              "store it again once nothing writes to it")
            self.fs.mv(tmp, dest)
        except OSError as e:
            self._discard(tmp)
            raise self._unwritable(e) from None
        return sha, size

    def put_folder(self, files: Mapping[str, str | os.PathLike]) -> FolderManifest:
        """Store each file; `files` maps relative path -> local file. Returns the manifest."""
        out = {}
        for rel, src in sorted(files.items()):
            _check_rel(rel)
            out[rel] = self.put_file(src)
        return FolderManifest(out)

    def _check_existing(self, sha: str, size: int) -> None:
        have = self.fs.size(self.path(sha))
        if have != size:
            raise corrupt(f"blob {sha} in {self.url} has {have} bytes but its content has {size}; run `retain verify` and restore the store")
        problem = self.check(sha)
        if problem:
            raise corrupt(f"{problem} in {self.url}, and this store would reuse it; nothing was committed. Restore it from a "
                          f"backup, or delete {self.path(sha)} and store the file again (run `retain verify` for the rest)")

    def _discard(self, tmp: str) -> None:
        try:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        except OSError:
            pass

    # ------------------------------------------------------------------ reading

    def exists(self, sha: str) -> bool:
        return self.fs.exists(self.path(sha))

    def get_file(self, sha: str, dest: str | os.PathLike) -> Path:
        """Copy blob `sha` to `dest`, hashing as it goes; a mismatch is CORRUPT and leaves no file."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        h = hashlib.sha256()
        try:
            with self.fs.open(self.path(sha), "rb") as f, open(part, "wb") as out:
                while block := f.read(CHUNK):
                    h.update(block)
                    out.write(block)
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            raise corrupt(f"blob {sha} is missing from {self.url}; restore the store from a backup (run `retain verify` to list all damage)") from None
        if h.hexdigest() != sha:
            part.unlink(missing_ok=True)
            raise corrupt(f"blob {sha} in {self.url} is corrupt (its content hashes to {h.hexdigest()}); restore it from a backup")
        os.replace(part, dest)
        return dest

    def get_folder(self, manifest: FolderManifest, dest: str | os.PathLike) -> Path:
        """Rebuild a stored folder at `dest` (which must not exist); published by one rename."""
        dest = Path(dest)
        if dest.exists():
            raise already_exists(f"output {dest} already exists; choose a new path or remove it first")
        if not dest.parent.exists():
            raise not_found(f"output folder {dest.parent} does not exist; create it first")
        part = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        part.mkdir()
        try:
            for rel, (sha, _size) in sorted(manifest.files.items()):
                target = part / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.get_file(sha, target)
            os.rename(part, dest)
        except BaseException:
            _rmtree(part)
            raise
        return dest

    def check(self, sha: str) -> Optional[str]:
        """None if blob `sha` is present and intact, else a one-line problem."""
        h = hashlib.sha256()
        try:
            with self.fs.open(self.path(sha), "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
        except FileNotFoundError:
            return f"blob {sha} is missing"
        if h.hexdigest() != sha:
            return f"blob {sha} is corrupt (content hashes to {h.hexdigest()})"
        return None

    # ------------------------------------------------------------------ listing (gc)

    def iter_files(self) -> Iterator[tuple[str, str, Optional[float]]]:
        """(sha-or-tmp-name, store path, modification time) for every file under blobs/ and tmp/."""
        for sub in ("blobs", "tmp"):
            base = f"{self.root}/{sub}"
            if not self.fs.exists(base):
                continue
            for path, info in self.fs.find(base, detail=True).items():
                yield path.rsplit("/", 1)[-1], path, _mtime(info)

    def remove(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except OSError as e:
            raise self._unwritable(e) from None


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open_regular(path) as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _copy_fsync(src: Path, dest: Path) -> tuple[str, int]:
    """Copy `src` to a new file `dest`, synced to disk; returns the (sha256, size) of what was copied."""
    h = hashlib.sha256()
    size = 0
    with open_regular(src) as f, open(dest, "xb") as out:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), size


def _check_rel(rel: str) -> None:
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise invalid(f"stored file path {rel!r} must be relative and stay inside its folder")


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _mtime(info: dict) -> Optional[float]:
    for key in ("mtime", "created", "LastModified", "last_modified"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if hasattr(v, "timestamp"):
            return v.timestamp()
    return None


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


