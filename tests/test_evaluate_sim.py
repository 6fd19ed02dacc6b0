"""Closed-loop evaluation in the simulator: batching, pairing, reproducibility, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from registry.errors import RegistryError
from registry.stats import wilson_interval
from retain import sim
from retain.evaluate import GENERALIST, evaluate, settings_for
from retain.policies.builtin_vla import BuiltinVLAAdapter

TINY = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
        "vision_channels": 16, "vocab_size": 256, "chunk": 4, "execute": 2}


class CountingAdapter(BuiltinVLAAdapter):
    """The built-in adapter, recording the batch size of every forward pass."""

    def __init__(self):
        self.calls: list[int] = []

    def act_chunk(self, model, obs, instructions):
        assert len(obs["image"]) == len(obs["state"]) == len(instructions)
        self.calls.append(len(instructions))
        return super().act_chunk(model, obs, instructions)


def test_one_forward_pass_per_chunk_for_all_live_episodes():
    adapter = CountingAdapter()
    model = adapter.build(TINY)
    r = evaluate(model, adapter, "plates", "id", episodes=12, seed=0)
    assert adapter.calls[0] == 12  # every episode in the first pass
    assert adapter.calls == sorted(adapter.calls, reverse=True)  # episodes only ever leave
    # an untrained policy rarely succeeds, so nearly every episode runs to the horizon
    assert len(adapter.calls) <= math.ceil(sim.max_steps("plates") / TINY["execute"])
    assert (r.successes, r.episodes) == (r.successes, 12) and (r.low, r.high) == wilson_interval(r.successes, 12)


def test_same_seed_same_result_and_generalist_spans_tasks():
    adapter = BuiltinVLAAdapter()
    model = adapter.build(TINY, seed=2)
    a = evaluate(model, adapter, GENERALIST, GENERALIST, episodes=10, seed=3)
    b = evaluate(model, adapter, GENERALIST, GENERALIST, episodes=10, seed=3)
    assert a == b and a.task == GENERALIST and a.setting == GENERALIST


def test_split_names():
    families = [s for s in sim.SETTINGS if s.startswith("ood:") and not sim.get_setting(s).opt_in]
    assert "ood:paraphrase" not in families  # opt-in: scored only when named
    assert settings_for("ood:paraphrase", "plates") == ["ood:paraphrase"]
    assert settings_for("all", "plates") == ["id", *families, GENERALIST]
    assert settings_for("all", None) == [GENERALIST]
    assert settings_for("ood", "plates") == families
    assert settings_for("ood:position", "plates") == ["ood:position"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "plates", "setting": "nowhere", "episodes": 4}, "unknown setting 'nowhere'"),
        ({"task": "juggling", "setting": "id", "episodes": 4}, "unknown skill 'juggling'"),
        ({"task": "plates", "setting": "id", "episodes": 0}, "episodes must be at least 1"),
    ],
)
def test_bad_input(kwargs, message):
    adapter = BuiltinVLAAdapter()
    with pytest.raises(RegistryError, match=message):
        evaluate(adapter.build(TINY), adapter, seed=0, **kwargs)
    with pytest.raises(RegistryError, match="needs a skill"):
        settings_for("id", None)
    with pytest.raises(RegistryError, match="unknown split 'sideways'"):
        settings_for("sideways", "plates")
