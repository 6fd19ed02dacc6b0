"""benchmarks/device_pretrain.py: the pruned MiniLM copy is exact, and a tiny budgeted run comes back
as shards that `complete` turns into a loadable base."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import device_pretrain  # noqa: E402

from retain.policies import get_policy, minilm  # noqa: E402


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("pack") / "minilm"
    minilm.write_pruned(dest, device_pretrain.pretraining_texts())
    return dest


def test_pruned_copy_encodes_pretraining_text_exactly(pack, monkeypatch):
    full = minilm.MiniLM().load_pretrained().eval()
    texts = ["put the red cube in the box", "push the blue ball to the top left corner"]
    want = minilm.sentence_embedding(full, texts)
    monkeypatch.setenv("RETAIN_MINILM_DIR", str(pack))
    pruned = minilm.MiniLM().load_pretrained().eval()
    assert torch.equal(minilm.sentence_embedding(pruned, texts), want)
    with pytest.raises(Exception, match="pruned MiniLM copy"):
        minilm.tokenize(["stow the zebra"], 16)


@pytest.mark.slow
def test_tiny_budgeted_run_completes_to_a_loadable_base(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_MINILM_DIR", str(pack))
    out = tmp_path / "out"
    assert device_pretrain.main(["train", "--tiny", "--out", str(out), "--budget", "1", "--reserve", "0",
                                 "--threads", "1", "--device", "cpu"]) == 0
    info = json.loads((out / "device_pretrain.json").read_text())
    assert info["cost_seconds"]["stage"] == "2 of 2" and info["recipe"]["policy_config"]["language_backbone"] == "minilm"
    assert all((out / name).stat().st_size < 16 * 2**20 for name in info["files"])
    monkeypatch.delenv("RETAIN_MINILM_DIR")  # complete puts the package's MiniLM back
    assert device_pretrain.main(["complete", "--src", str(out), "--out", str(tmp_path / "base")]) == 0
    cfg = json.loads((tmp_path / "base" / "policy_config.json").read_text())
    model = get_policy("builtin-vla").load(str(tmp_path / "base" / "weights"), cfg)
    from safetensors.torch import load_file

    shard = load_file(str(out / "trainable-0.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shard.items())
    assert torch.equal(state["language.text.encoder.layer.0.output.dense.weight"],
                       minilm.pretrained_state()["encoder.layer.0.output.dense.weight"])
