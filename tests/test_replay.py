"""`replay`: re-running recorded chains bit for bit, and rebuilding them with a change on a branch."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import fast_options, registry_state, save_tiny_model, tiny_registry
from registry.errors import RegistryError
from retain.learn import learn
from retain.provenance import runtime, runtime_changes
from retain.replay import ReplayResult, StepCheck, ensure_reproduced, replay, weight_diff


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    reg = tiny_registry(root)
    learn(reg, "plates", fast_options())
    learn(reg, "whiteboard", fast_options(alpha="0.5"))
    yield reg, root
    reg.close()


def cli(root, *args):
    return CliRunner().invoke(root_cli, ["--home", str(root / "home"), *args], catch_exceptions=False)


def test_rollback_then_replay_reproduces_the_hash_and_commits_nothing(chain):
    reg, root = chain
    assert cli(root, "rollback", "v1").exit_code == 0
    before = registry_state(reg)
    r = cli(root, "replay", "whiteboard", "-q")
    assert r.exit_code == 0, r.output
    assert "whiteboard on v1: finetune reproduced bit for bit" in r.output
    assert "reproduced v2 bit for bit" in r.output and "nothing was committed" in r.output
    assert registry_state(reg) == before
    doc = json.loads(cli(root, "replay", "plates,whiteboard", "-q", "--json").stdout)
    assert doc["reproduced"] is True and [c["recorded"] for c in doc["checks"]] == ["v1", "v2"]


def test_another_alpha_builds_a_branch_and_reuses_the_recorded_finetune(chain):
    reg, root = chain
    r = cli(root, "replay", "whiteboard", "--alpha", "0.25", "--branch", "wb-quarter", "-q")
    assert r.exit_code == 0, r.output
    new = reg.head("wb-quarter")
    assert (new.parent, new.how) == ("v1", "replay")
    run = reg.learn_run_for(new.name)
    assert run.alpha == 0.25 and run.recipe["replay_of"] == "v2"
    # same parent and mode: the finetune is rebuilt from the stored pack, so both record the same finetune
    rec = reg.learn_run_for("v2")
    from registry.pack import pack_hashes

    assert pack_hashes(reg.fetch_delta(rec.id, root / "d-old"))[1] == pack_hashes(reg.fetch_delta(run.id, root / "d-new"))[1]
    assert f"original v2" in r.output and f"replay {new.name}" in r.output
    assert reg.head("main").name == "v1"  # main untouched


def test_rebase_the_chain_onto_another_base(chain):
    reg, root = chain
    save_tiny_model(root / "base2", seed=3)
    new_base = reg.import_base(root / "base2", name="base2", ref="bases", config=reg.resolve("v0").config)
    r = cli(root, "replay", "plates,whiteboard", "--from", new_base.name, "-q")
    assert r.exit_code == 0, r.output
    branch = f"replay-plates-whiteboard-from-{new_base.name}"
    head = reg.head(branch)
    first = reg.resolve(head.parent)
    assert first.parent == new_base.name and first.how == head.how == "replay"
    assert reg.learn_run_for(first.name).skill == "plates" and reg.learn_run_for(head.name).skill == "whiteboard"
    assert "plates: v1" in r.output and "whiteboard: v2" in r.output
    assert reg.verify().ok


@pytest.mark.parametrize("args, fragment", [
    (["replay", "jump"], "no recorded learn of 'jump'"),
    (["replay", "whiteboard,plates"], "the recorded chain is not whiteboard -> plates"),
    (["replay", "whiteboard", "--from", "v99"], "v99"),
    (["replay", "whiteboard", "--alpha", "2", "--branch", "x"], "outside [0, 1]"),
    (["replay", "whiteboard", "--alpha", "0.25", "--branch", "main"], "branch 'main' already exists"),
    (["replay", "whiteboard", "--of", "v1"], "v1 did not learn 'whiteboard'"),
    (["replay", "whiteboard", "--mode", "co-ft"], "records no data recipe"),
    (["replay", "whiteboard", "--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["replay", "whiteboard", "--device", "cuda"], "torch sees none",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_replays_are_one_line(chain, args, fragment):
    reg, root = chain
    before = registry_state(reg)
    r = cli(root, *args, "-q")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code not in (0, 1) and len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], r.output
    assert registry_state(reg) == before


def test_weight_diff_names_the_worst_tensor(tmp_path):
    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    same = weight_diff(a, a)
    assert same.differing == 0 and same.text() == "identical values"
    d = weight_diff(a, b)
    assert 0 < d.differing <= d.tensors and d.max_abs > 0 and d.worst in d.text()


def test_a_step_that_differs_is_reported_as_an_error(tmp_path):
    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    diff = weight_diff(a, b)
    check = StepCheck("plates", "v1", "v0", "differs", "sha256:x", "sha256:y", diff, "sha256:m", "sha256:n", None, 0.5, 1.0,
                      "0.1.0+git.aaa", "0.1.0+git.bbb")
    res = ReplayResult(["plates"], "v0", False, {}, [check], None, [])
    assert not res.reproduced
    with pytest.raises(RegistryError) as e:
        ensure_reproduced(res)
    assert "the finetune differs" in str(e.value) and diff.worst in str(e.value)
    assert "recorded with code 0.1.0+git.aaa, replayed with 0.1.0+git.bbb" in str(e.value)
    same_code = dataclasses.replace(check, code="0.1.0+git.aaa", runtime_changes="numpy 2.3.1 -> 2.4.6, cpu AVX512 -> AVX2")
    with pytest.raises(RegistryError) as e:
        ensure_reproduced(ReplayResult(["plates"], "v0", False, {}, [same_code], None, []))
    assert str(e.value).endswith("(runtime since the record: numpy 2.3.1 -> 2.4.6, cpu AVX512 -> AVX2)")


def test_runtime_changes_names_what_differs_from_the_record():
    now = {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6", "cpu": "AVX2"}
    assert runtime_changes({**now, "numpy": "2.3.1", "cpu": "AVX512"}, now) == "cpu AVX512 -> AVX2, numpy 2.3.1 -> 2.4.6"
    assert runtime_changes(now, now) == ""
    assert runtime_changes(None, now) == ""  # recorded before runtimes were recorded: nothing to compare
    assert set(runtime()) == set(now) | {"cpu_model"} and runtime()["torch"].startswith("2.")
    older = {**now, "cpu_model": "GenuineIntel 6/85"}  # same instruction set, another CPU model
    assert runtime_changes(older, {**now, "cpu_model": "GenuineIntel 6/207"}) == "cpu_model GenuineIntel 6/85 -> GenuineIntel 6/207"
    assert runtime_changes(now, {**now, "cpu_model": "GenuineIntel 6/207"}) == ""  # a record without the model names none


def test_cpu_model_is_vendor_family_and_model_of_the_first_processor():
    from retain.provenance import cpu_model

    intel = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
             "model name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel\t\t: 1\n")
    assert cpu_model(intel) == "GenuineIntel 6/207"
    assert cpu_model("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n") == "0xd0c"  # ARM names its part


def test_learn_and_replay_record_the_runtime(chain):
    reg, root = chain
    assert reg.learn_run_for("v2").recipe["runtime"] == runtime()
    assert (reg.learn_run_for("v2").recipe["device"], reg.learn_run_for("v2").recipe["bf16"]) == ("cpu", False)
    assert cli(root, "replay", "whiteboard", "--of", "v2", "--alpha", "0.75", "--branch", "wb-runtime", "-q").exit_code == 0
    assert reg.learn_run_for(reg.head("wb-runtime").name).recipe["runtime"] == runtime()


def test_rebasing_onto_a_policy_the_demos_do_not_fit_is_one_line(chain):
    reg, root = chain
    from learn_support import TINY
    from retain.policies import get_policy

    adapter = get_policy("builtin-vla")
    other = {**TINY, "state_dim": 7}
    adapter.save(adapter.build(other), root / "base-s7")
    v = reg.import_base(root / "base-s7", name="s7", ref="s7", config={"policy": "builtin-vla", "policy_config": other})
    before = registry_state(reg)
    r = cli(root, "replay", "plates", "--from", v.name, "-q")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 4 and len(lines) == 1 and "observation.state has 5 values per frame, the policy needs 7" in lines[0], r.output
    assert registry_state(reg) == before
