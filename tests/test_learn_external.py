"""Weights finetuned elsewhere (`--finetuned --preset`) scored by the user's own evaluator (`--eval-cmd`):
alpha selection and lineage for policies that are not built in."""
from __future__ import annotations

import json
import shlex
import sys

import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import save_tiny_model, tiny_registry

# A real objective over the candidate's weights: how far along parent -> finetuned it sits
# (alpha_hat), scored best at 0.5. The evaluator learns the two endpoints from the environment.
EVALUATOR = r'''
import json, os, sys
import numpy as np
from registry.checkpoint import open_checkpoint
name = "action.head.weight"
with open_checkpoint(sys.argv[1]) as c, open_checkpoint(os.environ["PARENT"]) as p, open_checkpoint(os.environ["FT"]) as f:
    a, b, x = p.array(name).astype(np.float64), f.array(name).astype(np.float64), c.array(name).astype(np.float64)
alpha_hat = float(((x - a) * (b - a)).sum() / ((b - a) ** 2).sum())
print("evaluating", sys.argv[1])
print(json.dumps({"successes": round(20 * (1 - abs(alpha_hat - 0.5))), "episodes": 20}))
'''


@pytest.fixture
def setup(tmp_path, monkeypatch):
    script = tmp_path / "my_eval.py"
    script.write_text(EVALUATOR)
    ft = save_tiny_model(tmp_path / "finetuned-elsewhere", seed=11)
    monkeypatch.setenv("PARENT", str(tmp_path / "base-weights"))
    monkeypatch.setenv("FT", str(ft))
    monkeypatch.setenv("PYTHONPATH", ":".join(p for p in sys.path if p))
    return tmp_path, f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{checkpoint}}", ft


def _learn(home, *args):
    return CliRunner().invoke(root_cli, ["--home", str(home), "learn", *args, "-q", "-n", "2"], catch_exceptions=False)


def test_outside_weights_get_alpha_selection_lineage_and_replay(setup):
    tmp, cmd, ft = setup
    reg = tiny_registry(tmp)
    r = _learn(tmp / "home", "pick-cup", "--finetuned", str(ft), "--preset", "builtin", "--eval-cmd", cmd, "--json",
               "--alpha-strategy", "grid")  # the evaluator peaks at one alpha for every tensor
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["alpha"] == 0.5 and doc["validation_family"] == "ood:external"
    cands = {p["alpha"]: p["scores"]["ood:external"]["successes"] for p in doc["sweep"] if p["role"] == "candidate"}
    assert cands == {0.25: 15, 0.5: 20, 0.75: 15}
    run = reg.learn_run_for("v1")
    assert run.recipe["mode"] == run.mode == "external" and run.recipe["finetuned_source"] == str(ft)
    assert [(e.skill, e.mode) for e in reg.lineage().edges] == [("pick-cup", "external")]
    assert run.demo_set_id is None
    assert ("pick-cup", "ood:external", 20, 20) in {(s.skill, s.split, s.successes, s.episodes) for s in reg.scores("v1")}
    # the finetune cannot be re-run here, but the chain's bytes still replay from the stored delta
    from retain.replay import replay

    check = replay(reg, ["pick-cup"])
    assert check.reproduced and check.checks[0].finetune == "rebuilt-from-delta"
    reg.close()


def test_a_base_without_policy_config_is_learned_with_outside_weights_only(setup):
    tmp, cmd, ft = setup
    from registry.api import Registry

    save_tiny_model(tmp / "base-weights")
    reg = Registry.open(home=str(tmp / "home"), create=True)
    reg.import_base(tmp / "base-weights", name="pi0-like")  # no config: not a built-in policy
    r = _learn(tmp / "home", "fold-towel", "--finetuned", str(ft), "--preset", "builtin", "--eval-cmd", cmd, "--alpha-strategy", "grid")
    assert r.exit_code == 0, r.output
    assert "alpha 0.5 chosen on ood:external" in r.output
    assert {(s.skill, s.split) for s in reg.scores("v1")} == {("fold-towel", "ood:external")}
    r2 = _learn(tmp / "home", "plates")
    assert r2.exit_code != 0 and "records no policy config" in r2.output
    reg.close()
