"""The blob store on its own: content addressing, atomic writes, verified reads, no overwrite."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bad_input_kit import overwrite_blob
from registry.errors import Code, RegistryError
from registry.store import BlobStore, FolderManifest, folder_listing


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> BlobStore:
    url = str(tmp_path / "store") if request.param == "local" else f"memory://store-test-{tmp_path.name}"
    s = BlobStore(url)
    s.ensure_exists()
    return s


def test_put_is_content_addressed_and_leaves_no_temporary_files(store, tmp_path):
    src = tmp_path / "x.bin"
    src.write_bytes(b"hello blobs")
    sha, size = store.put_file(src)
    assert sha == hashlib.sha256(b"hello blobs").hexdigest() and size == 11
    assert store.put_file(src) == (sha, size)  # idempotent
    names = [name for name, _, _ in store.iter_files()]
    assert names == [sha]  # nothing left in tmp/
    store.get_file(sha, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"hello blobs"


def test_existing_blob_of_another_size_is_corruption_not_overwritten(tmp_path):
    store = BlobStore(str(tmp_path / "store"))
    src = tmp_path / "x.bin"
    src.write_bytes(b"the real content")
    sha, _ = store.put_file(src)
    overwrite_blob(store.path(sha), b"short")
    with pytest.raises(RegistryError) as err:
        store.put_file(src)
    assert err.value.code == Code.CORRUPT and sha in str(err.value)
    assert Path(store.path(sha)).read_bytes() == b"short"  # left for the operator to inspect


def test_missing_blob_is_reported_and_nothing_half_written(store, tmp_path):
    with pytest.raises(RegistryError) as err:
        store.get_file("0" * 64, tmp_path / "out.bin")
    assert err.value.code == Code.CORRUPT and "is missing" in str(err.value)
    assert not (tmp_path / "out.bin").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert store.check("0" * 64) == f"blob {'0' * 64} is missing"


def test_folders_round_trip_and_their_id_depends_only_on_content(store, tmp_path):
    src = tmp_path / "f"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    m = store.put_folder(folder_listing(src))
    assert sorted(m.files) == ["a.txt", "sub/b.txt"] and m.total_size == 2
    assert FolderManifest(dict(reversed(list(m.files.items())))).sha256 == m.sha256
    out = store.get_folder(m, tmp_path / "out")
    assert (out / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(RegistryError):
        store.get_folder(m, tmp_path / "out")  # never overwrites an existing folder


@pytest.mark.parametrize("rel", ["../escape", "/abs", "a/../../b", "a\\b"])
def test_folder_paths_must_stay_inside(store, tmp_path, rel):
    src = tmp_path / "x"
    src.write_text("x")
    with pytest.raises(RegistryError) as err:
        store.put_folder({rel: src})
    assert err.value.code == Code.INVALID_VALUE
