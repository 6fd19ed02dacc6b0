"""Demo sets recorded by reference: where the dataset lives plus a manifest of its files' hashes.

A big dataset (camera video runs to hundreds of gigabytes) is not copied into the blob store. The
registry stores only a small JSON manifest (as a one-file folder, so gc and verify treat it like
any other) naming the dataset's location (a local path or an fsspec URL) and the sha256 and size of
every file under it. Whoever uses the demo set later (replay, rehearsal, verify) re-hashes the
files at the location and refuses a dataset that no longer matches.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from registry.errors import RegistryError, corrupt, invalid_state, not_found, unavailable

FORMAT = "lerobot-v3+ref"
MANIFEST_NAME = "retain-demo-reference.json"
CHUNK = 1 << 22


def hash_tree(location: str) -> dict[str, list]:
    """relative POSIX path -> [sha256, size] for every file under `location` (folder or fsspec URL)."""
    fs, root = _fs(location)
    try:
        if not fs.isdir(root):
            raise not_found(f"demos {location} do not exist (or are not a folder); pass the dataset's root folder")
        out: dict[str, list] = {}
        base = root.rstrip("/") + "/"
        for path in sorted(fs.find(root)):
            h, size = hashlib.sha256(), 0
            with fs.open(path, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
                    size += len(block)
            out[path[len(base):] if path.startswith(base) else path.rsplit("/", 1)[-1]] = [h.hexdigest(), size]
        return out
    except OSError as e:
        raise unavailable(f"cannot read demos at {location} ({e}); check the path or URL and its credentials") from None


def manifest_json(location: str, files: dict[str, list]) -> str:
    return json.dumps({"format": FORMAT, "location": location, "files": files}, indent=1, sort_keys=True)


def parse_manifest(text: str, what: str) -> tuple[str, dict[str, list]]:
    try:
        m = json.loads(text)
        return str(m["location"]), {str(k): [str(v[0]), int(v[1])] for k, v in m["files"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise corrupt(f"{what}: the stored reference manifest is unreadable ({e}); restore it from a backup") from None


def differences(location: str, files: dict[str, list]) -> list[str]:
    """What differs between the dataset at `location` now and the recorded manifest (empty: the same)."""
    try:
        now = hash_tree(location)
    except RegistryError as e:  # gone or unreachable: a difference too
        return [str(e)]
    out = []
    for rel, (sha, size) in sorted(files.items()):
        got = now.get(rel)
        if got is None:
            out.append(f"{rel} is missing")
        elif got[0] != sha:
            out.append(f"{rel} changed ({got[1]} bytes, sha256 {got[0][:12]}; recorded {size} bytes, {sha[:12]})")
    out += [f"{rel} was added" for rel in sorted(set(now) - set(files))]
    return out


def refuse_changed(what: str, location: str, problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise invalid_state(f"{what} was recorded by reference to {location} and its files no longer match: "
                            f"{problems[0]}{more}; restore the recorded files, or learn the skill again from the new data")


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except (ValueError, ImportError) as e:
        raise unavailable(f"cannot open demos at {location} ({e})") from None
