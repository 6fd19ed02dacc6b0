"""Learning-rate multipliers by module (learn --lr-scale vision=0.1): parsing, what they move, and
that a recipe without them trains exactly as before they existed."""
from __future__ import annotations

import pytest
import torch

from registry.errors import RegistryError
from retain.finetune import FinetuneRecipe
from retain.learn_options import LearnOptions
from retain.policies import get_policy
from retain.train import format_lr_scale, parse_lr_scale, train_bc
from tests.test_train_bc import TINY, synthetic_frames


def test_module_names_stand_for_their_parameters_and_recipes_record_one_canonical_text():
    assert parse_lr_scale("vision=0.1, action.blocks.0.=0.5") == {"vision.": 0.1, "action.blocks.0.": 0.5}
    assert parse_lr_scale("") == {} == parse_lr_scale(None)
    assert format_lr_scale(parse_lr_scale("vision.=0.1,action=2")) == "action=2,vision=0.1"
    assert FinetuneRecipe(lr_scale="vision.=0.10").lr_scale == "vision=0.1"
    assert LearnOptions.of(lr_scale="vision.=0.10").finetune.lr_scale == "vision=0.1"


@pytest.mark.parametrize("text", ["vision", "vision=0", "vision=-1", "=0.1", "vision=fast"])
def test_a_malformed_scale_is_refused_with_the_form_to_use(text):
    with pytest.raises(RegistryError, match="NAME=FACTOR"):
        FinetuneRecipe(lr_scale=text)


def test_recipes_recorded_before_the_option_replay_with_one_rate():
    assert FinetuneRecipe.from_dict({"steps": 10}).lr_scale == ""
    assert LearnOptions.from_recipe({"steps": 10}).finetune.lr_scale == ""


def _trained(lr_scale, steps=20):
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY, seed=0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_bc(model, adapter, synthetic_frames(4, 10, seed=0), steps=steps, lr=1e-3, batch_size=8, seed=0, threads=1, lr_scale=lr_scale)
    return start, model.state_dict()


def _moved(start, end, prefix):
    return sum(float((end[k] - start[k]).abs().sum()) for k in start if k.startswith(prefix))


def test_a_scale_of_one_trains_bit_for_bit_as_no_scale():
    _, plain = _trained(None)
    _, scaled = _trained({"vision.": 1.0})
    assert all(torch.equal(plain[k], scaled[k]) for k in plain)


def test_a_small_scale_slows_only_the_named_module():
    start, plain = _trained(None)
    _, slow = _trained({"vision.": 0.01})
    assert _moved(start, slow, "vision.") < 0.05 * _moved(start, plain, "vision.")
    assert _moved(start, slow, "action.") > 0.5 * _moved(start, plain, "action.")


def test_a_scale_that_names_no_parameter_is_refused():
    with pytest.raises(RegistryError, match="starts no parameter name"):
        _trained({"visoin.": 0.1}, steps=1)


def test_learn_records_the_scale_and_replay_reproduces_it_bit_for_bit(tmp_path):
    from learn_support import fast_options, tiny_registry
    from retain.learn import learn
    from retain.replay import replay

    reg = tiny_registry(tmp_path)
    try:
        slow = learn(reg, "plates", fast_options(lr_scale="vision=0.1", alpha="0.5"))
        assert reg.learn_run_for(slow.version.name).recipe["lr_scale"] == "vision=0.1"
        reg.rollback("v0", reason="the same skill again, with one rate")
        plain = learn(reg, "plates", fast_options(alpha="0.5"))
        assert reg.learn_run_for(plain.version.name).recipe["lr_scale"] == ""
        assert plain.version.weight_hash != slow.version.weight_hash  # the scale reached the finetune
        reg.rollback("v0", reason="replay the scaled run")
        res = replay(reg, ["plates"], of=slow.version.name)
        assert res.reproduced and not res.changed
    finally:
        reg.close()
