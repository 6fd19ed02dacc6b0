"""Demo sets recorded by reference (location + manifest of file hashes): stored, verified, refused when changed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import fast_options, registry_state, tiny_registry
from registry.api import Registry
from registry.errors import Code, RegistryError
from retain.data import Episode, write_dataset
from retain.learn import learn
from retain.learn_demos import REFERENCE_ABOVE, Demos, demos_reference
from retain.replay import replay

pytest.importorskip("av")  # the [video] extra, part of [test]

MP4 = "videos/observation.images.top/chunk-000/file-000.mp4"


def video_dataset(path: Path, episodes=3, size=32, seed=0) -> Path:
    """A small video dataset whose action is a function of the state (learnable by the tiny policy)."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(episodes):
        t = 10
        state = rng.uniform(-1, 1, (t, 5)).astype(np.float32)
        frames = np.stack([np.full((size, size, 3), 40 * i + 8 * k, np.uint8) for k in range(t)])
        eps.append(Episode(frames, state, np.tanh(state[:, :4] * 1.5).astype(np.float32), "wipe the table"))
    return write_dataset(path, eps, fps=10, video=True)


def store_files(reg: Registry) -> set[str]:
    return {name for name, _, _ in reg.store.iter_files()}


def test_reference_stores_only_a_manifest_and_fetch_checks_the_files(tmp_path):
    ds = video_dataset(tmp_path / "ds")
    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        before = store_files(reg)
        demo = reg.put_demo_set("wipe", ds, source=str(ds), episodes=3, frames=30, reference=str(ds))
        assert demo.fmt == "lerobot-v3+ref"
        added = store_files(reg) - before
        assert len(added) == 1   # the manifest; none of the dataset's files
        manifest = json.loads(Path(reg.store.path(added.pop())).read_text())
        assert manifest["location"] == str(ds) and set(manifest["files"]) >= {MP4, "meta/info.json"}
        assert reg.fetch_demo_set(demo.id, tmp_path / "unused") == ds and not (tmp_path / "unused").exists()
        report = reg.verify()
        assert report.ok and report.demo_sets_checked == 1

        video = (ds / MP4).read_bytes()
        (ds / MP4).write_bytes(video[:-1] + bytes([video[-1] ^ 1]))
        with pytest.raises(RegistryError) as e:
            reg.fetch_demo_set(demo.id, tmp_path / "x")
        assert e.value.code == Code.INVALID_STATE and "\n" not in str(e.value)
        assert str(e.value).startswith(f"demo set {demo.id} (wipe) was recorded by reference to {ds} and its files no longer match: "
                                       f"{MP4} changed")
        assert str(e.value).endswith("restore the recorded files, or learn the skill again from the new data")
        problems = reg.verify().problems
        assert len(problems) == 1 and problems[0].startswith(f"demo set {demo.id} (by reference to {ds}): {MP4} changed")

        (ds / MP4).write_bytes(video)
        assert reg.verify().ok
        (ds / "meta/stats.json").unlink()
        (ds / "meta/extra.json").write_text("{}")
        assert [p.split(": ", 1)[1] for p in reg.verify().problems] == ["meta/stats.json is missing", "meta/extra.json was added"]


def test_a_lost_manifest_blob_is_one_line(tmp_path):
    ds = video_dataset(tmp_path / "ds")
    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        before = store_files(reg)
        demo = reg.put_demo_set("wipe", ds, source=str(ds), episodes=3, frames=30, reference=str(ds))
        blob = (store_files(reg) - before).pop()
        path = Path(reg.store.path(blob))
        path.chmod(0o644)
        path.unlink()
        with pytest.raises(RegistryError, match=f"demo set {demo.id}: its reference manifest .* cannot be read") as e:
            reg.fetch_demo_set(demo.id, tmp_path / "x")
        assert e.value.code == Code.CORRUPT
        assert any("cannot be read" in p for p in reg.verify().problems)


def test_verify_cli_names_a_changed_dataset(tmp_path):
    ds = video_dataset(tmp_path / "ds")
    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        reg.put_demo_set("wipe", ds, source=str(ds), episodes=3, frames=30, reference=str(ds))
    runner = CliRunner()
    r = runner.invoke(root_cli, ["--home", str(tmp_path / "home"), "verify"], catch_exceptions=False)
    assert r.exit_code == 0 and "1 demo sets by reference" in r.output
    import shutil

    shutil.rmtree(ds / "videos")
    r = runner.invoke(root_cli, ["--home", str(tmp_path / "home"), "verify"])
    assert r.exit_code == 7
    assert f"problem: demo set 1 (by reference to {ds}): {MP4} is missing" in r.output


def test_auto_records_only_big_datasets_by_reference(tmp_path):
    ds = video_dataset(tmp_path / "ds")
    d = Demos(ds, None, str(ds), 3)
    assert demos_reference(d, "ds", "auto") is None   # small: copied
    assert demos_reference(d, None, "reference") is None   # built-in demos are always copied
    assert demos_reference(d, "s3://bucket/ds", "reference") == "s3://bucket/ds"
    assert demos_reference(d, str(ds), "copy") is None
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "videos.bin", "wb") as f:   # sparse: no disk used
        f.truncate(REFERENCE_ABOVE + 1)
    assert demos_reference(Demos(big, None, "big", 1), str(big), "auto") == str(big.resolve())


@pytest.fixture(scope="module")
def referenced(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    ds = video_dataset(root / "wipe-demos")
    reg = tiny_registry(root)
    res = learn(reg, "wipe", fast_options(alpha="0.5"), demos=str(ds), demos_store="reference")
    yield reg, root, ds, res
    reg.close()


def test_learn_records_a_video_dataset_by_reference_and_replay_reproduces_it(referenced):
    reg, root, ds, res = referenced
    demo = reg.demo_set(res.demo_set_id)
    assert demo.fmt == "lerobot-v3+ref" and demo.frames == 30 and demo.episodes == 3
    assert reg.learn_run_for("v1").recipe["demos"]["stored"] == "by reference"
    out = replay(reg, ["wipe"])
    assert out.checks and all(c.reproduced for c in out.checks)


def test_replay_refuses_a_dataset_whose_files_changed(referenced):
    reg, root, ds, res = referenced
    video = (ds / MP4).read_bytes()
    (ds / MP4).write_bytes(video + b"\x00")
    try:
        before = registry_state(reg)
        r = CliRunner().invoke(root_cli, ["--home", str(root / "home"), "replay", "wipe", "-q"])
        assert r.exit_code == 5, r.output
        line = r.output.strip()
        assert line.startswith(f"Error: demo set {res.demo_set_id} (wipe) was recorded by reference to {ds} and its files "
                               f"no longer match: {MP4} changed") and "\n" not in line
        assert registry_state(reg) == before
    finally:
        (ds / MP4).write_bytes(video)


def test_reference_without_user_demos_is_refused(tmp_path):
    reg = tiny_registry(tmp_path)
    try:
        with pytest.raises(RegistryError, match="--demos-store reference needs --demos"):
            learn(reg, "plates", fast_options(), demos_store="reference")
    finally:
        reg.close()


def test_a_url_reference_is_checked_where_it_lives(tmp_path):
    import fsspec

    from retain.data import read_dataset

    ds = video_dataset(tmp_path / "ds")
    fs = fsspec.filesystem("memory")
    for f in ds.rglob("*"):
        if f.is_file():
            fs.pipe(f"/ref-test/ds/{f.relative_to(ds).as_posix()}", f.read_bytes())
    url = "memory://ref-test/ds"
    with Registry.open(home=str(tmp_path / "home"), create=True) as reg:
        demo = reg.put_demo_set("wipe", ds, source=url, episodes=3, frames=30, reference=url)   # hashed from a local copy
        where = reg.fetch_demo_set(demo.id, tmp_path / "unused")
        assert where == url and read_dataset(where).num_frames == 30
        fs.pipe(f"/ref-test/ds/{MP4}", b"replaced")
        with pytest.raises(RegistryError, match=f"recorded by reference to {url} and its files no longer match: {MP4} changed"):
            reg.fetch_demo_set(demo.id, tmp_path / "unused")
    fs.rm("/ref-test", recursive=True)
