"""DAgger relabelling: which states it keeps, and the expert roll-in that reaches later phases."""
from __future__ import annotations

import numpy as np
import pytest

from registry.errors import RegistryError
from retain.dagger import relabelled_frames
from retain.policies import get_policy
from retain.pretrain_recipe import PretrainRecipe


@pytest.fixture(scope="module")
def tiny():
    adapter = get_policy("builtin-vla")
    recipe = PretrainRecipe.preset("tiny")
    return adapter.build(recipe.policy_config, seed=0), adapter


def _mean_distance_to_destination(frames) -> float:
    return float(np.linalg.norm(frames.state[:, :2] - frames.target[:, 2:4], axis=1).mean())


def test_roll_in_hands_over_mid_task_and_keeps_only_the_policys_states(tiny):
    model, adapter = tiny
    own = relabelled_frames(model, adapter, ["put-in-bowl"], "id", 12, seed=5)
    rolled = relabelled_frames(model, adapter, ["put-in-bowl"], "id", 12, seed=5, roll_in=0.9)
    again = relabelled_frames(model, adapter, ["put-in-bowl"], "id", 12, seed=5, roll_in=0.9)
    assert np.array_equal(rolled.state, again.state) and np.array_equal(rolled.chunks, again.chunks)
    # an untrained policy never leaves the start for long; the expert's roll-in carries the
    # block toward the bowl first, so the kept states lie nearer the destination, and fewer of them
    assert len(rolled.state) < len(own.state)
    assert _mean_distance_to_destination(rolled) < _mean_distance_to_destination(own)


def test_roll_in_share_is_validated():
    with pytest.raises(RegistryError, match=r"--dagger-roll-in must be in \[0, 1\)"):
        PretrainRecipe.preset("tiny", dagger_roll_in=1.0)


def test_an_unknown_dagger_setting_fails_before_any_training():
    with pytest.raises(RegistryError, match="unknown setting 'clutter'"):
        PretrainRecipe.preset("tiny", dagger_setting="clutter")


def test_a_continuation_setting_moves_the_rollouts_too():
    from retain.pretrain_recipe import Continuation

    shipped = PretrainRecipe.preset("default")  # rolls out in pretrain-clutter
    assert shipped.dagger_setting == "pretrain-clutter"
    moved = Continuation("pretrain-receptacles", threads=1).stage_recipe(shipped)
    assert (moved.setting, moved.dagger_setting, moved.dagger_roll_in, moved.threads) == ("pretrain-receptacles", "pretrain-receptacles", 0.0, 1)
    kept = Continuation(roll_in=0.3).stage_recipe(shipped)
    assert (kept.setting, kept.dagger_setting, kept.dagger_roll_in, kept.threads) == (shipped.setting, "pretrain-clutter", 0.3, 2)
    with pytest.raises(RegistryError, match="setting"):
        Continuation("no-such-setting")
