"""`retain merge` and `retain partitions` as a user runs them: success paths and every bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from merge_testkit import read, same_bits, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ckpts(tmp_path):
    g = torch.Generator().manual_seed(0)
    pre = {
        "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight": torch.randn(8, 3, 2, 2, generator=g).bfloat16(),
        "paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight": torch.randn(16, 8, generator=g).bfloat16(),
        "paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight": torch.randn(8, 8, generator=g).bfloat16(),
        "action_in_proj.weight": torch.randn(8, 4, generator=g).bfloat16(),
    }
    ft = {k: (v.float() + 0.1 * torch.randn(v.shape, generator=g)).bfloat16() for k, v in pre.items()}
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    return tmp_path, pre, ft


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_merge_per_modality(ckpts):
    d, pre, ft = ckpts
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "vision=0,language=1,action=0.5",
            "--preset", "openpi-pi0", "-o", d / "out", "--quiet")
    assert r.exit_code == 0, r.output
    assert "merged 4 tensors" in r.output and "language" in r.output
    out = read(d / "out")
    lang = "paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight"
    vis = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"
    assert same_bits(out[lang], ft[lang]) and same_bits(out[vis], pre[vis])


def test_merge_json_and_sharding(ckpts):
    d, _, _ = ckpts
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "0.5", "-o", d / "out",
            "--shard-size", "300B", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["tensors"] == 4 and report["bytes_written"] == report["bytes_read"] // 2
    assert (d / "out" / "model.safetensors.index.json").exists()


def test_merge_n_way_with_one_alpha_per_checkpoint(ckpts):
    d, _, _ = ckpts
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", d / "ft.safetensors", "--alpha", "0.25", "--alpha", "0.5",
            "-o", d / "o.safetensors", "-q")
    assert r.exit_code == 0, r.output
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", d / "ft.safetensors", d / "ft.safetensors",
            "--alpha", "0.25", "--alpha", "0.5", "-o", d / "p.safetensors")
    assert r.exit_code == 4 and "got 2 --alpha for 3 finetuned checkpoints" in r.output


def test_merge_rules_file(ckpts):
    d, _, ft = ckpts
    (d / "rules.txt").write_text("other: .*\n")
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "vision=0,language=0,action=0,other=1",
            "--rules", d / "rules.txt", "-o", d / "o.safetensors")
    assert r.exit_code == 0, r.output
    out = read(d / "o.safetensors")
    assert all(same_bits(out[k], ft[k]) for k in ft)


def _bad(d):
    (d / "junk.safetensors").write_bytes(b"this is not a safetensors file at all")
    data = (d / "pre.safetensors").read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) - 10])
    write(d / "other.safetensors", {"a": torch.ones(3)})
    (d / "bad_rules.txt").write_text("vision ^x\n")
    write(d / "big_pre.safetensors", {"vision.w": torch.tensor([1.0, 60000.0], dtype=torch.float16)})
    write(d / "big_ft.safetensors", {"vision.w": torch.tensor([1.0, -60000.0], dtype=torch.float16)})
    write(d / "plain.safetensors", {"w": torch.zeros(2)})


@pytest.mark.parametrize(
    "pre, ft, extra, code, needle",
    [
        ("missing.safetensors", "ft.safetensors", [], 9, "checkpoint {d}/missing.safetensors does not exist"),
        ("junk.safetensors", "ft.safetensors", [], 4, "is not a safetensors file"),
        ("pre.safetensors", "cut.safetensors", [], 4, "is truncated"),
        ("pre.safetensors", "other.safetensors", [], 4, "checkpoints do not match: "),
        ("pre.safetensors", "ft.safetensors", ["--preset", "pi7"], 4, "unknown partition preset 'pi7'"),
        ("pre.safetensors", "ft.safetensors", ["--rules", "bad_rules.txt"], 4, "bad_rules.txt:1: expected 'modality: regex'"),
        ("pre.safetensors", "ft.safetensors", ["--rules", "nope.txt"], 9, "rules file"),
        ("pre.safetensors", "ft.safetensors", ["--alpha", "vision=1,language=zero,action=1", "--preset", "openpi-pi0"], 4,
         "alpha for language 'zero' is not a number"),
        ("pre.safetensors", "ft.safetensors", ["--alpha", "2"], 4, "outside [0, 1]; pass --extrapolate"),
        ("plain.safetensors", "plain.safetensors", ["--alpha", "vision=1,language=1,action=1"], 4,
         "no partition preset claims any tensor of {d}/plain.safetensors"),
        ("pre.safetensors", "ft.safetensors", ["--alpha", "vision=1,language=1,action=1", "--preset", "builtin"], 4,
         "match no rule of partition 'builtin'"),
        ("big_pre.safetensors", "big_ft.safetensors", ["--alpha", "-0.5", "--extrapolate"], 4, "merge produced NaN or inf in tensor vision.w"),
        ("pre.safetensors", "ft.safetensors", ["--shard-size", "lots"], 4, "shard size 'lots' is not a size"),
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(ckpts, pre, ft, extra, code, needle):
    d, _, _ = ckpts
    _bad(d)
    args = ["merge", d / pre, d / ft, "-o", d / "out"]
    if "--alpha" not in extra:
        args += ["--alpha", "0.5"]
    args += [str(d / e) if e.endswith(".txt") else e for e in extra]
    r = run(*args)
    assert r.exit_code == code, r.output
    assert r.output.startswith("Error: ") and needle.format(d=d) in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not (d / "out").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_existing_output_is_refused(ckpts):
    d, _, _ = ckpts
    (d / "out").mkdir()
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "0.5", "-o", d / "out")
    assert r.exit_code == 3 and "already exists" in r.output


def test_partitions_text_and_json(ckpts):
    d, _, _ = ckpts
    r = run("partitions", d / "pre.safetensors", "--preset", "openpi-pi0")
    assert r.exit_code == 0, r.output
    assert "partition openpi-pi0" in r.output and "action_in_proj.weight" in r.output
    r = run("partitions", d / "pre.safetensors", "--json")
    data = json.loads(r.output)
    assert data["partition"] == "openpi-pi0"  # detected
    assert data["modalities"]["action"] == {"tensors": 2, "params": 96, "examples": [
        "action_in_proj.weight", "paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight"]}
    assert data["modalities"]["vision"]["params"] == 96 and data["modalities"]["language"]["tensors"] == 1


def test_partitions_shows_unclaimed(ckpts):
    d, _, _ = ckpts
    r = run("partitions", d / "pre.safetensors", "--preset", "builtin")
    assert r.exit_code == 0 and "unclaimed" in r.output and "other=VALUE" in r.output


@pytest.mark.parametrize("args, code, needle", [
    (["missing"], 9, "does not exist"),
    (["pre.safetensors", "--preset", "nope"], 4, "unknown partition preset 'nope'"),
    (["pre.safetensors", "--rules", "bad_rules.txt"], 4, "expected 'modality: regex'"),
])
def test_partitions_bad_input(ckpts, args, code, needle):
    d, _, _ = ckpts
    _bad(d)
    r = run("partitions", *[str(d / a) if i == 0 or a.endswith(".txt") else a for i, a in enumerate(args)])
    assert r.exit_code == code and r.output.startswith("Error: ") and needle in r.output


def test_command_modules_do_not_import_torch():
    code = "import sys, retain.commands.merge_cmds, retain.partitions, retain.alphas; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_partitions_with_a_rules_file(ckpts):
    d, _, _ = ckpts
    (d / "rules.txt").write_text("# split by hand\naction: ^action_in_proj\\.\nvision: vision_tower\nlanguage: .\n")
    r = run("partitions", d / "pre.safetensors", "--rules", d / "rules.txt", "--json")
    assert r.exit_code == 0, r.output
    mods = json.loads(r.output)["modalities"]
    assert mods["action"]["tensors"] == 1 and mods["vision"]["tensors"] == 1 and mods["language"]["tensors"] == 2


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("500MiB", 500 * 2**20), ("1000", 1000), ("1.5G", 1_500_000_000)])
def test_shard_size_units(text, size):
    from retain.commands.merge_cmds import parse_size

    assert parse_size(text) == size


def test_partitions_print_rules_round_trips_through_rules(ckpts):
    d, _, _ = ckpts
    r = run("partitions", d / "pre.safetensors", "--preset", "openpi-pi0", "--print-rules")
    assert r.exit_code == 0 and r.output.startswith("vision: ^paligemma_with_expert")
    (d / "mine.txt").write_text(r.output)
    a = json.loads(run("partitions", d / "pre.safetensors", "--rules", d / "mine.txt", "--json").output)["modalities"]
    b = json.loads(run("partitions", d / "pre.safetensors", "--preset", "openpi-pi0", "--json").output)["modalities"]
    assert a == b


def test_merge_detects_the_preset_that_partitions_shows(ckpts):
    d, _, _ = ckpts
    shown = json.loads(run("partitions", d / "pre.safetensors", "--json").output)["partition"]
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "vision=0,language=1,action=0.5",
            "-o", d / "detected", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"partition {shown} (detected" in r.output
    given = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "vision=0,language=1,action=0.5",
                "--preset", shown, "-o", d / "given", "--quiet")
    assert given.exit_code == 0, given.output
    a, b = read(d / "detected"), read(d / "given")
    assert a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)


def test_scalar_alpha_reports_a_row_per_modality_when_a_preset_matches(ckpts):
    d, _, _ = ckpts
    r = run("merge", d / "pre.safetensors", d / "ft.safetensors", "--alpha", "0.5", "-o", d / "out", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [line.split()[0] for line in r.output.splitlines() if "alpha 0.5" in line]
    assert rows == ["vision", "language", "action"], r.output


def test_merged_folder_carries_the_policy_config_that_base_import_reads(tmp_path):
    from registry.api import Registry

    g = torch.Generator().manual_seed(0)
    pre = {"vision.w": torch.randn(4, generator=g), "language.w": torch.randn(4, generator=g), "action.w": torch.randn(4, generator=g)}
    (tmp_path / "pre").mkdir()
    write(tmp_path / "pre" / "model.safetensors", pre)
    write(tmp_path / "ft.safetensors", {k: v + 1 for k, v in pre.items()})
    config = {"policy": "builtin-vla", "policy_config": {"d_model": 8}, "retain": {"version": "v0", "weight_hash": "sha256:x"}}
    (tmp_path / "pre" / "config.json").write_text(json.dumps(config))
    r = run("merge", tmp_path / "pre", tmp_path / "ft.safetensors", "--alpha", "vision=1,language=0.5,action=1",
            "-o", tmp_path / "merged", "--quiet")
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert written["policy"] == "builtin-vla" and written["policy_config"] == {"d_model": 8}
    assert "retain" not in written  # v0's hash is not the merge's
    assert written["retain_merge"]["partition"] == "builtin"
    home = tmp_path / "home"
    r = run("--home", home, "init")
    r = run("--home", home, "base", "import", tmp_path / "merged", "--name", "m")
    assert r.exit_code == 0, r.output
    assert "policy builtin-vla from" in r.output
    with Registry.open(home=str(home)) as reg:
        assert reg.resolve("v0").config["policy_config"] == {"d_model": 8}
