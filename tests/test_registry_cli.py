"""The registry CLI: the tour, and every bad input giving one line, a non-zero exit, no traceback,
and an unchanged registry. Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bad_input_kit import assert_one_line_error, overwrite_blob, snapshot
from conftest import cli_argv
from registry.checkpoint import save_tensors
from registry.db import SCHEMA_HEAD
from registry.errors import Code


@pytest.fixture
def populated(registry, make_checkpoint, cli):
    assert cli("base", "import", str(make_checkpoint("base.safetensors", seed=0)), "--name", "tiny").exit_code == 0
    return registry


def test_tour(registry, make_checkpoint, cli, tmp_path):
    r = cli("init")
    assert r.exit_code == 0 and "registry ready" in r.output
    r = cli("base", "import", str(make_checkpoint("base.safetensors", seed=0)), "--name", "tiny")
    assert r.exit_code == 0 and r.output.startswith("v0 imported") and "main -> v0" in r.output
    r = cli("base", "import", str(make_checkpoint("sharded", seed=1, shard_bytes=300)), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["name"] == "v1"
    r = cli("lineage")
    assert r.exit_code == 0 and "v0  base-import" in r.output and "v1  base-import  [main]" in r.output
    assert json.loads(cli("lineage", "--json").output)["refs"] == {"main": "v1"}
    assert cli("lineage", "--format", "dot").output.startswith("digraph lineage {")
    assert cli("lineage", "--format", "mermaid").output.startswith("graph LR")
    r = cli("show", "v1")
    assert r.exit_code == 0 and "model.safetensors.index.json" in r.output and "no scores for v1 yet" in r.output
    r = cli("scores")
    assert r.exit_code == 0 and "no scores for v1 yet" in r.output
    assert json.loads(cli("scores", "--json").output) == []
    r = cli("rollback", "v0", "-m", "try the other base")
    assert r.exit_code == 0 and r.output.strip() == "main: v1 -> v0 (rollback)"
    log = json.loads(cli("log", "--json").output)
    assert [(e["old"], e["new"], e["action"], e["reason"]) for e in log][0] == ("v1", "v0", "rollback", "try the other base")
    assert "v0 -> v1" in cli("log").output
    r = cli("export", "v1", "-o", str(tmp_path / "exp"))
    assert r.exit_code == 0 and (tmp_path / "exp" / "config.json").exists()
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["retain"]["version"] == "v1"
    r = cli("verify")
    assert r.exit_code == 0 and r.output.startswith("ok: ")
    r = cli("gc", "--grace", "0")
    assert r.exit_code == 0 and "deleted 0 orphan file(s)" in r.output
    assert cli("db", "current").output.strip() == f"{SCHEMA_HEAD} (head)"
    assert cli("db", "upgrade").exit_code == 0


def test_unknown_version(populated, cli):
    before = snapshot(populated)
    for args in (["show", "v7"], ["export", "v7", "-o", "/tmp/never-written"], ["rollback", "v7"], ["scores", "v7"]):
        assert_one_line_error(cli(*args), Code.NOT_FOUND, "version v7 does not exist (latest is v0)")
    assert not Path("/tmp/never-written").exists()
    assert snapshot(populated) == before


def test_export_into_a_folder_that_holds_files_is_refused(populated, cli, tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert_one_line_error(cli("export", "v0", "-o", str(dest)), Code.ALREADY_EXISTS, f"output {dest} already exists")
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_unknown_ref(populated, cli):
    before = snapshot(populated)
    assert_one_line_error(cli("show", "nosuchref"), Code.NOT_FOUND, "'nosuchref' is neither a version", "(refs: main)")
    assert_one_line_error(cli("log", "--ref", "nosuchref"), Code.NOT_FOUND, "ref 'nosuchref' does not exist")
    assert_one_line_error(cli("rollback", "v0", "--ref", "nosuchref"), Code.NOT_FOUND, "ref 'nosuchref' does not exist")
    assert snapshot(populated) == before


def test_missing_file(populated, cli, tmp_path):
    before = snapshot(populated)
    assert_one_line_error(cli("base", "import", str(tmp_path / "absent.safetensors")), Code.NOT_FOUND, "does not exist")
    assert snapshot(populated) == before


def test_not_safetensors(populated, cli, tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x80\x04\x95 a pickle, maybe, but certainly not safetensors" * 4)
    before = snapshot(populated)
    assert_one_line_error(cli("base", "import", str(bogus)), Code.INVALID_VALUE, "is not a safetensors file")
    assert snapshot(populated) == before


def test_truncated_safetensors(populated, cli, make_checkpoint, tmp_path):
    whole = make_checkpoint("whole.safetensors", seed=4).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[: len(whole) - 17])
    assert struct.unpack("<Q", whole[:8])[0] + 8 < len(whole) - 17  # header intact, data short
    before = snapshot(populated)
    assert_one_line_error(cli("base", "import", str(cut)), Code.INVALID_VALUE, "is truncated")
    assert snapshot(populated) == before


def test_checkpoint_with_nan(populated, cli, tmp_path):
    w = np.ones((4, 4), np.float32)
    w[2, 1] = np.nan
    bad = save_tensors(tmp_path / "nan.safetensors", {"language.w": ("F32", (4, 4), w.tobytes()),
                                                      "action.b": ("F32", (2,), np.zeros(2, np.float32).tobytes())})
    before = snapshot(populated)
    assert_one_line_error(cli("base", "import", str(bad)), Code.INVALID_VALUE, "NaN or inf in language.w")
    assert snapshot(populated) == before


def test_name_with_path_separator(populated, cli, make_checkpoint):
    before = snapshot(populated)
    src = str(make_checkpoint("ok.safetensors", seed=1))
    assert_one_line_error(cli("base", "import", src, "--name", "../evil"), Code.INVALID_VALUE, "base name '../evil' is not allowed")
    assert_one_line_error(cli("base", "import", src, "--ref", "a/b"), Code.INVALID_VALUE, "ref name 'a/b' is not allowed")
    assert snapshot(populated) == before


def test_unreachable_database(tmp_path):
    from click.testing import CliRunner

    from cli import cli as root

    for url in ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", f"sqlite:///{tmp_path}/no/such/dir/r.db"):
        r = CliRunner().invoke(root, ["--home", str(tmp_path / "h"), "--db", url, "lineage"])
        assert r.exit_code in (Code.UNAVAILABLE.value, Code.NOT_FOUND.value), r.output
        assert_one_line_error(r, Code(r.exit_code))
    r = CliRunner().invoke(root, ["--home", str(tmp_path / "h"), "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x", "lineage"])
    assert_one_line_error(r, Code.UNAVAILABLE, "cannot reach database postgresql+psycopg://postgres@127.0.0.1:1/x")
    r = CliRunner().invoke(root, ["--home", str(tmp_path / "h"), "--db", "nosuchdialect://x", "lineage"])
    assert_one_line_error(r, Code.INVALID_VALUE, "is not usable")


def test_read_only_store(populated, make_checkpoint):
    """A store nobody may write to: the import fails cleanly. Runs as a real process; as root,
    which permissions do not bind, the process runs without CAP_DAC_OVERRIDE (setpriv)."""
    store = Path(populated.locations.store_url)
    src = make_checkpoint("new.safetensors", seed=8)
    before = snapshot(populated)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a store read-only")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]
    modes = {p: p.stat().st_mode for p in [store, *store.rglob("*")]}
    for p in modes:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    try:
        r = subprocess.run(prefix + cli_argv(populated, "base", "import", str(src)), capture_output=True, text=True, timeout=120)
    finally:
        for p, m in modes.items():
            os.chmod(p, m)
    assert r.returncode == Code.UNAVAILABLE.value, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "is not writable" in r.stderr and "fix its permissions" in r.stderr
    assert snapshot(populated) == before


def test_verify_reports_corruption_with_nonzero_exit(populated, cli):
    blob = populated.show("v0").files[0].blob
    path = Path(populated.store.path(blob))
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    overwrite_blob(path, bytes(data))
    r = cli("verify")
    assert r.exit_code == Code.CORRUPT.value and f"problem: blob {blob} is corrupt" in r.output
    assert "Traceback" not in r.output and r.output.strip().splitlines()[-1].startswith("Error: verify found")


def test_base_import_records_the_policy_config_file(registry, make_checkpoint, cli, tmp_path):
    cfg = tmp_path / "policy.json"
    cfg.write_text(json.dumps({"policy": "builtin-vla", "policy_config": {"max_words": 12}}))
    r = cli("base", "import", str(make_checkpoint("base.safetensors", seed=0)), "--config", str(cfg), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(cli("show", "v0", "--json").output)["version"]["config"]["policy_config"] == {"max_words": 12}


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read --config"),
    ("{not json", "is not valid JSON"),
    ('["builtin-vla"]', 'must be a JSON object with a "policy" name'),
    ('{"policy_config": {}}', 'must be a JSON object with a "policy" name'),
])
def test_base_import_refuses_a_bad_config_file(populated, make_checkpoint, cli, tmp_path, content, fragment):
    cfg = tmp_path / "policy.json"
    if content is not None:
        cfg.write_text(content)
    before = snapshot(populated)
    assert_one_line_error(cli("base", "import", str(make_checkpoint("b2.safetensors", seed=1)), "--config", str(cfg)),
                          Code.INVALID_VALUE, fragment)
    assert snapshot(populated) == before
