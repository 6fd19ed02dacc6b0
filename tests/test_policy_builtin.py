"""The built-in VLA and the policy adapter registry, on synthetic tensors of the contract's shapes."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from registry.errors import RegistryError
from retain.policies import available_policies, get_policy
from retain.policies.adapter import ACTION, ACTION_IS_PAD, IMAGE, INSTRUCTION, STATE, PolicyAdapter
from retain.policies.builtin_vla import VLAConfig
from retain.policies.tokenizer import PAD_ID, tokenize

TINY = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
        "vision_channels": 16, "vocab_size": 256, "chunk": 4, "execute": 2}


def _batch(b: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        IMAGE: torch.randint(0, 256, (b, 32, 32, 3), dtype=torch.uint8, generator=g),
        STATE: torch.randn(b, 5, generator=g),
        INSTRUCTION: ["put the red cube in the bowl", "wipe the board"] * (b // 2),
        ACTION: torch.rand(b, 4, 4, generator=g) * 2 - 1,
        ACTION_IS_PAD: torch.zeros(b, 4, dtype=torch.bool),
    }


def test_parameters_are_named_by_modality():
    model = get_policy("builtin-vla").build(TINY)
    prefixes = {name.split(".")[0] for name, _ in model.state_dict().items()}
    assert prefixes == {"vision", "language", "action"}


def test_build_is_seeded_and_leaves_global_rng_alone():
    adapter = get_policy("builtin-vla")
    before = torch.random.get_rng_state()
    a, b, c = adapter.build(TINY, seed=3), adapter.build(TINY, seed=3), adapter.build(TINY, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"vision_grid": 3}, "vision_grid 3"),
        ({"chunk": 4, "execute": 5}, "execute 5"),
        ({"d_model": 30, "n_heads": 4}, "d_model 30"),
        ({"language_layers": 0}, "language_layers"),
        ({"not_a_field": 1}, "not_a_field"),
    ],
)
def test_config_checks_name_the_values(bad, words):
    with pytest.raises(RegistryError, match=words):
        VLAConfig.from_dict(bad)


def test_act_chunk_shapes_and_range():
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY)
    obs = {"image": np.zeros((5, 32, 32, 3), np.uint8), "state": np.zeros((5, 5), np.float32)}
    chunk = adapter.act_chunk(model, obs, ["pick the cube"] * 5)
    assert chunk.shape == (5, 2, 4) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)
    assert adapter.act(model, obs, ["pick the cube"] * 5).shape == (5, 4)


def test_instruction_changes_the_action():
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY)
    obs = {"image": np.zeros((2, 32, 32, 3), np.uint8), "state": np.zeros((2, 5), np.float32)}
    out = adapter.act_chunk(model, obs, ["pick the red cube", "wipe the whiteboard"])
    assert not np.allclose(out[0], out[1])


def test_loss_ignores_padded_steps():
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY)
    batch = _batch()
    batch[ACTION_IS_PAD][:, 2:] = True
    base, _ = adapter.loss(model, batch)
    batch[ACTION][:, 2:] += 5.0  # targets past the episode's end must not matter
    moved, _ = adapter.loss(model, batch)
    assert base.item() == pytest.approx(moved.item())


def test_small_model_fits_a_batch():
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY)
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(60):
        loss, logs = adapter.loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first and set(logs) == {"l1"}


def test_save_load_roundtrip(tmp_path):
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY, seed=1)
    dest = adapter.save(model, tmp_path / "w")
    assert (dest / "model.safetensors").is_file()
    again = adapter.load(dest, TINY)
    obs = {"image": np.full((3, 32, 32, 3), 90, np.uint8), "state": np.ones((3, 5), np.float32)}
    assert np.array_equal(adapter.act_chunk(model, obs, ["a b"] * 3), adapter.act_chunk(again, obs, ["a b"] * 3))
    with pytest.raises(RegistryError, match="already exists"):
        adapter.save(model, dest)


def test_load_with_wrong_config_is_a_clear_error(tmp_path):
    adapter = get_policy("builtin-vla")
    dest = adapter.save(adapter.build(TINY), tmp_path / "w")
    with pytest.raises(RegistryError, match="shape"):
        adapter.load(dest, {**TINY, "d_model": 64, "d_action": 32})
    with pytest.raises(RegistryError, match="missing"):
        adapter.load(dest, {**TINY, "language_layers": 2})


def test_tokenizer_is_stable_and_padded():
    ids, mask = tokenize(["Put the RED cube.", "put the red cube", ""], vocab_size=256, max_words=6)
    assert np.array_equal(ids[0], ids[1])
    assert mask[0].sum() == 4 and mask[2].sum() == 1 and ids[2, 1] == PAD_ID
    # the hash is crc32, not Python's salted hash: fixed across processes
    assert ids[0, 0] == 2 + (__import__("zlib").crc32(b"put") % 254)
    long_ids, long_mask = tokenize([" ".join(["w"] * 20)], 256, 6)
    assert long_mask.all()


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(RegistryError, match="unknown policy 'nope'.*builtin-vla"):
        get_policy("nope")


def test_entry_point_discovery(tmp_path, monkeypatch):
    """An outside package registers a policy through the 'retain.policies' entry-point group."""
    pkg = tmp_path / "outside_policy.py"
    pkg.write_text(textwrap.dedent("""
        from retain.policies.builtin_vla import BuiltinVLAAdapter
        class OutsideAdapter(BuiltinVLAAdapter):
            name = "outside"
    """))
    dist = tmp_path / "outside_policy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-policy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[retain.policies]\noutside = outside_policy:OutsideAdapter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "outside" in available_policies()
    adapter = get_policy("outside")
    assert isinstance(adapter, PolicyAdapter) and adapter.name == "outside"
    sys.modules.pop("outside_policy", None)
