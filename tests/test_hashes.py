"""Hashes a user can check: export prints both its weights hash and each file's sha256, and
`retain verify --file` recomputes the weights hash of any checkpoint."""
from __future__ import annotations

import hashlib
import json

from registry.errors import Code


def test_export_prints_the_weights_hash_and_the_sha256sum_of_each_file(registry, make_checkpoint, cli, tmp_path):
    v = registry.import_base(make_checkpoint("base.safetensors", seed=0, shard_bytes=64))
    out = tmp_path / "exported"
    r = cli("export", "v0", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"weights hash {v.weight_hash}" in r.output and f"retain verify --file {out}" in r.output
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1
    for shard in shards:
        assert f"file sha256  {hashlib.sha256(shard.read_bytes()).hexdigest()}  {shard.name}" in r.output


def test_verify_file_recomputes_the_weights_hash_and_names_the_versions_holding_it(registry, make_checkpoint, cli, tmp_path):
    v = registry.import_base(make_checkpoint("base.safetensors", seed=0))
    cli("export", "v0", "-o", str(tmp_path / "e"))
    r = cli("verify", "--file", str(tmp_path / "e"))
    assert r.exit_code == 0 and f"weights hash {v.weight_hash} (held by v0)" in r.output
    other = make_checkpoint("other.safetensors", seed=3)
    doc = json.loads(cli("verify", "--file", str(other), "--json").output)
    assert doc["versions"] == [] and doc["weight_hash"].startswith("sha256:") and doc["weight_hash"] != v.weight_hash
    assert doc["files"] == {"other.safetensors": hashlib.sha256(other.read_bytes()).hexdigest()}
    missing = cli("verify", "--file", str(tmp_path / "nope"))
    assert missing.exit_code == Code.NOT_FOUND.value and missing.output.startswith("Error: ")


def test_export_onto_an_existing_file_says_file(registry, make_checkpoint, cli, tmp_path):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    target = tmp_path / "taken.safetensors"
    target.write_bytes(b"x")
    r = cli("export", "v0", "-o", str(target))
    assert r.exit_code == Code.ALREADY_EXISTS.value
    assert "is an existing file, and export writes a folder" in r.output and "not empty" not in r.output
