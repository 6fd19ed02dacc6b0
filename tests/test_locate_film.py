"""Language-conditioned vision (FiLM) and the privileged locate loss of simulator pretraining."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from retain.policies import get_policy
from retain.policies.adapter import IMAGE, INSTRUCTION, STATE, TARGET
from retain.pretrain import collect_frames
from retain.sim.demos import collect_episodes
from retain.batches import Sampler as _Sampler
from retain.frames import concat_frames
from retain.train import train_bc

TINY = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
        "vision_channels": 16, "vocab_size": 256, "chunk": 4, "execute": 2}
ADAPTER = get_policy("builtin-vla")


def test_demos_record_where_the_named_thing_and_its_destination_are():
    (ep,) = collect_episodes("put-in-bowl", 1, "id", seed=5)
    assert ep.target.shape == (len(ep.action), 4)
    # the expert's first move heads for the thing (x, y of target[:2]) from the gripper (state[:2])
    heading = ep.target[0, :2] - ep.state[0, :2]
    assert float(np.dot(heading, ep.action[0, :2])) > 0
    # a bowl does not move: the destination stays put while the block travels to it
    assert np.allclose(ep.target[:, 2:], ep.target[0, 2:])
    assert np.linalg.norm(ep.target[-1, :2] - ep.target[-1, 2:]) < np.linalg.norm(ep.target[0, :2] - ep.target[0, 2:])


def test_film_starts_as_the_identity():
    plain = ADAPTER.build(TINY, seed=3)
    film = ADAPTER.build({**TINY, "vision_film": True}, seed=3)
    film.load_state_dict(plain.state_dict(), strict=False)  # FiLM layers stay at their zero init
    frames = collect_frames(["reach-object"], "pretrain", 2, seed=1)
    tokens, mask = plain.tokenize([frames.tasks[t] for t in frames.task_index])
    args = (torch.from_numpy(frames.images), torch.from_numpy(frames.state), tokens, mask)
    with torch.no_grad():
        assert torch.equal(plain(*args), film(*args))


def test_locate_loss_trains_the_head_only_when_targets_are_handed_over():
    frames = collect_frames(["reach-object", "put-in-box"], "pretrain", 16, seed=2)
    assert frames.target is not None and frames.target.shape == (len(frames), 4)
    sampler = _Sampler(frames, chunk=4, targets=True)
    assert TARGET in sampler.batch(np.arange(4)) and TARGET not in _Sampler(frames, 4).batch(np.arange(4))

    cfg = {**TINY, "vision_film": True, "locate_weight": 1.0}
    idx = np.arange(len(frames))
    before = ADAPTER.build(cfg, seed=0)
    batch = sampler.batch(idx)
    with torch.no_grad():
        start = ADAPTER.loss(before, batch)[1]["locate"]
    trained = ADAPTER.build(cfg, seed=0)
    train_bc(trained, ADAPTER, frames, 60, 3e-3, 32, seed=0, threads=1, targets=True)
    with torch.no_grad():
        end = ADAPTER.loss(trained, batch)[1]["locate"]
    assert end < 0.7 * start
    # without targets the head gets no gradient: its weights stay as built
    untouched = ADAPTER.build(cfg, seed=0)
    train_bc(untouched, ADAPTER, frames, 5, 3e-3, 32, seed=0, threads=1)
    assert torch.equal(untouched.vision.locate[0].weight, before.vision.locate[0].weight)


def test_targets_are_all_or_nothing_when_frames_are_combined():
    sim_frames = collect_frames(["reach-object"], "id", 2, seed=0)
    user_like = dataclasses.replace(sim_frames, target=None)  # a LeRobot dataset has no targets
    assert concat_frames([sim_frames, sim_frames]).target is not None
    assert concat_frames([sim_frames, user_like]).target is None


def test_heatmap_locate_head_learns_and_feeding_it_changes_the_actions():
    frames = collect_frames(["reach-object", "put-in-box"], "pretrain", 16, seed=2)
    batch = _Sampler(frames, chunk=4, targets=True).batch(np.arange(len(frames)))
    cfg = {**TINY, "vision_film": True, "locate_weight": 1.0, "locate_heatmap": True}
    before = ADAPTER.build(cfg, seed=0)
    trained = ADAPTER.build(cfg, seed=0)
    train_bc(trained, ADAPTER, frames, 120, 3e-3, 32, seed=0, threads=1, targets=True)
    with torch.no_grad():
        assert ADAPTER.loss(trained, batch)[1]["locate"] < 0.7 * ADAPTER.loss(before, batch)[1]["locate"]

    fed = ADAPTER.build({**cfg, "locate_feeds_action": True}, seed=0)
    tokens, mask = fed.tokenize(batch[INSTRUCTION])
    args = (batch[IMAGE], batch[STATE], tokens, mask)
    with torch.no_grad():
        acted = fed(*args)
        fed.vision.locate.to_table.bias += 0.5  # move where it thinks things are
        assert not torch.allclose(acted, fed(*args))


def test_a_fed_locate_head_learns_from_the_action_loss_alone_when_finetuning():
    frames = collect_frames(["reach-object"], "id", 8, seed=3)
    cfg = {**TINY, "vision_film": True, "locate_weight": 1.0, "locate_heatmap": True, "locate_feeds_action": True}
    before = ADAPTER.build(cfg, seed=0)
    tuned = ADAPTER.build(cfg, seed=0)
    train_bc(tuned, ADAPTER, frames, 5, 3e-3, 16, seed=0, threads=1)  # no TARGET: as a user's demos
    assert not torch.equal(tuned.vision.locate.heat.weight, before.vision.locate.heat.weight)


def test_locate_options_without_the_head_are_refused_in_one_line():
    import pytest

    from registry.errors import RegistryError

    with pytest.raises(RegistryError, match="locate_weight > 0"):
        ADAPTER.build({**TINY, "locate_feeds_action": True})
