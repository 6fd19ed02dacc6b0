"""--compile: recorded in a recipe only when on (recipes without it keep their bytes), refused where it
cannot run, and a compiled CPU training tracks the eager one and resumes bit for bit. The two
training tests compile the tiny network: 38 s and 25 s with a cold Inductor cache, seconds warm."""
from __future__ import annotations

import pytest
import torch

from registry.errors import RegistryError
from retain.finetune import FinetuneRecipe
from retain.learn_options import LearnOptions
from retain.policies import get_policy
from retain.pretrain_recipe import PretrainRecipe
from retain.train import train_bc
from test_train_bc import TINY, synthetic_frames

ADAPTER = get_policy("builtin-vla")


def test_compile_is_recorded_only_when_on_and_read_back():
    plain = PretrainRecipe.preset("tiny")
    assert "compile" not in plain.to_dict() and PretrainRecipe.from_dict(plain.to_dict()) == plain
    on = PretrainRecipe.preset("tiny", compile=True)
    assert on.to_dict() == {**plain.to_dict(), "compile": True} and PretrainRecipe.from_dict(on.to_dict()).compile

    assert "compile" not in FinetuneRecipe().to_dict() and "compile" not in LearnOptions.of().record()
    recorded = LearnOptions.of(compile=True).record()
    assert recorded["compile"] is True and LearnOptions.from_recipe(recorded).finetune.compile
    assert not LearnOptions.from_recipe(LearnOptions.of().record()).finetune.compile


def test_compile_under_ddp_is_refused_in_one_line():
    with pytest.raises(RegistryError, match="--compile trains in one process"):
        FinetuneRecipe(compile=True, nproc=2)


def test_a_compiled_cpu_training_tracks_the_eager_one_and_keeps_plain_names():
    from torch._dynamo.utils import counters

    data = synthetic_frames(2, 8, 0)
    eager, compiled = ADAPTER.build(TINY, seed=0), ADAPTER.build(TINY, seed=0)
    start = {k: v.clone() for k, v in eager.state_dict().items()}
    a = train_bc(eager, ADAPTER, data, 3, 1e-3, 8, 0)
    counters.clear()
    b = train_bc(compiled, ADAPTER, data, 3, 1e-3, 8, 0, compile=True)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward did go through torch.compile
    wa, wb = eager.state_dict(), compiled.state_dict()
    assert wb.keys() == wa.keys()  # no "_orig_mod." names
    assert all(torch.isfinite(v).all() for v in wb.values())
    # the same batches through the same weights: fused kernels only round differently (measured:
    # first loss 6e-8 apart, final equal), so the losses agree to 1e-5
    assert b.first_loss == pytest.approx(a.first_loss, rel=1e-5) and b.final_loss == pytest.approx(a.final_loss, rel=1e-5)
    # AdamW moves a weight by up to ~lr a step however small its gradient, so a rounding flip of a
    # near-zero gradient can move it by up to 2 lr; measured 7e-5 apart after 3 steps at lr 1e-3
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-3
    assert max((wb[k] - start[k]).abs().max().item() for k in wb) > 1e-4  # it trained


def test_a_compiled_pretrain_resumes_from_its_checkpoint_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    import json
    import shutil

    import retain.pretrain_run as pretrain_run
    from registry.checkpoint import open_checkpoint, weight_hash
    from retain.pretrain import pretrain, resume_pretrain

    def digest(path):
        with open_checkpoint(path) as ckpt:
            return weight_hash(ckpt)

    recipe = PretrainRecipe.preset("tiny", seed=3, steps=8, compile=True)
    write = pretrain_run.write_checkpoint

    def write_and_copy(run_dir, state, notes=None):  # the folder as a kill right after the checkpoint leaves it
        out = write(run_dir, state, notes)
        shutil.copytree(run_dir, tmp_path / "at-4")
        return out

    monkeypatch.setattr(pretrain_run, "write_checkpoint", write_and_copy)
    full = pretrain(recipe, tmp_path / "full", run_dir=tmp_path / "run", checkpoint_steps=4)
    monkeypatch.setattr(pretrain_run, "write_checkpoint", write)
    assert json.loads((tmp_path / "at-4" / "run.json").read_text())["recipe"]["compile"] is True
    res = resume_pretrain(tmp_path / "at-4", tmp_path / "resumed")
    assert res.recipe.compile and digest(res.weights_dir) == digest(full.weights_dir)
    assert res.report.losses == full.report.losses
