"""Behaviour cloning: chunk targets, determinism (same seed -> same weight hash), co-training mix."""
from __future__ import annotations

import numpy as np
import pytest

from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import RegistryError
from retain.policies import get_policy
from retain.frames import DemoFrames, chunk_targets, concat_frames
from retain.train import lr_at, train_bc

TINY = {"d_model": 32, "d_action": 32, "n_heads": 2, "language_layers": 1, "action_layers": 1,
        "vision_channels": 16, "vocab_size": 256, "chunk": 4, "execute": 2}


def synthetic_frames(episodes: int, length: int, seed: int, instruction: str = "push the blue cube left") -> DemoFrames:
    """Episodes whose action is a function of the state, so there is something to learn."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    state = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    return DemoFrames(
        images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        state=state,
        action=np.tanh(state[:, :4] * 2).astype(np.float32),
        episode_index=np.repeat(np.arange(episodes), length),
        task_index=np.zeros(n, np.int64),
        tasks=[instruction],
    )


def _hash(model, adapter, tmp_path, name):
    path = adapter.save(model, tmp_path / name)
    with open_checkpoint(path) as ckpt:
        return weight_hash(ckpt)


def test_chunk_targets_stop_at_episode_ends():
    idx, pad = chunk_targets(np.array([0, 0, 0, 1, 1, 2]), 3)
    assert idx.tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4], [5, 5, 5]]
    assert pad.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 1, 1]]


def test_same_seed_same_weights_different_seed_different(tmp_path):
    adapter = get_policy("builtin-vla")
    data = synthetic_frames(4, 10, seed=0)
    hashes = []
    for i, seed in enumerate((7, 7, 8)):
        model = adapter.build(TINY, seed=0)
        train_bc(model, adapter, data, steps=15, lr=1e-3, batch_size=8, seed=seed, threads=1)
        hashes.append(_hash(model, adapter, tmp_path, f"m{i}"))
    assert hashes[0] == hashes[1] != hashes[2]


def test_training_reduces_the_loss():
    adapter = get_policy("builtin-vla")
    model = adapter.build(TINY, seed=0)
    report = train_bc(model, adapter, synthetic_frames(8, 10, seed=1), steps=150, lr=2e-3, batch_size=16, seed=0, threads=1, log_every=10)
    assert report.final_loss < 0.6 * report.first_loss
    assert len(report.losses) == 15 and not model.training


def test_cotraining_mix_draws_from_both_sources(tmp_path):
    adapter = get_policy("builtin-vla")
    new = synthetic_frames(3, 8, seed=2, instruction="wipe the board")
    old = synthetic_frames(3, 8, seed=3)
    plain, mixed = adapter.build(TINY), adapter.build(TINY)
    train_bc(plain, adapter, new, 10, 1e-3, 8, 0, threads=1)
    train_bc(mixed, adapter, new, 10, 1e-3, 8, 0, mix=(old, 0.5), threads=1)
    assert _hash(plain, adapter, tmp_path, "p") != _hash(mixed, adapter, tmp_path, "m")
    with pytest.raises(RegistryError, match="mix ratio 1.0"):
        train_bc(adapter.build(TINY), adapter, new, 10, 1e-3, 8, 0, mix=(old, 1.0))


def test_each_mixed_in_source_fills_its_own_share_of_every_batch(tmp_path):
    adapter = get_policy("builtin-vla")
    new = synthetic_frames(3, 8, seed=2, instruction="wipe the board")
    pre = synthetic_frames(3, 8, seed=3, instruction="pick up the red cube")
    old = synthetic_frames(3, 8, seed=4, instruction="put the plate in the rack")
    seen: list[list[str]] = []

    class Watching:  # the real adapter, with each batch's instructions noted
        def __getattr__(self, name):
            return getattr(adapter, name)

        def loss(self, model, batch):
            seen.append(list(batch["instruction"]))
            return adapter.loss(model, batch)

    one_tuple, one_list = adapter.build(TINY), adapter.build(TINY)
    train_bc(one_tuple, adapter, new, 6, 1e-3, 8, 0, mix=(pre, 0.25), threads=1)
    train_bc(one_list, adapter, new, 6, 1e-3, 8, 0, mix=[(pre, 0.25)], threads=1)
    assert _hash(one_tuple, adapter, tmp_path, "t") == _hash(one_list, adapter, tmp_path, "l")
    two = adapter.build(TINY)
    train_bc(two, Watching(), new, 6, 1e-3, 8, 0, mix=[(pre, 0.25), (old, 0.25)], threads=1)
    assert _hash(two, adapter, tmp_path, "2") != _hash(one_list, adapter, tmp_path, "l2")
    assert [[b.count(t) for t in ("wipe the board", "pick up the red cube", "put the plate in the rack")] for b in seen] == [[4, 2, 2]] * 6
    with pytest.raises(RegistryError, match="leave none of the batch"):
        train_bc(adapter.build(TINY), adapter, new, 2, 1e-3, 8, 0, mix=[(pre, 0.5), (old, 0.5)])


def test_bad_training_arguments_are_clear():
    adapter = get_policy("builtin-vla")
    with pytest.raises(RegistryError, match="steps=0"):
        train_bc(adapter.build(TINY), adapter, synthetic_frames(1, 4, 0), 0, 1e-3, 8, 0)
    empty = synthetic_frames(1, 4, 0)
    empty = DemoFrames(empty.images[:0], empty.state[:0], empty.action[:0], empty.episode_index[:0], empty.task_index[:0], empty.tasks)
    with pytest.raises(RegistryError, match="no demo frames"):
        train_bc(adapter.build(TINY), adapter, empty, 5, 1e-3, 8, 0)


def test_concat_keeps_episodes_and_tasks_apart():
    a = synthetic_frames(2, 3, 0, "one")
    b = synthetic_frames(2, 3, 1, "two")
    c = concat_frames([a, b])
    assert c.episodes == 4 and c.tasks == ["one", "two"]
    assert [c.tasks[t] for t in c.task_index[[0, -1]]] == ["one", "two"]


def test_lr_schedule_warms_up_then_decays():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10) == pytest.approx(0.1, abs=1e-3)


def test_training_without_the_nan_fill_of_new_memory_gives_the_same_bytes(tmp_path, monkeypatch):
    """deterministic_torch skips deterministic mode's NaN fill of fresh tensors for speed; a kernel
    that read memory before writing it would make the two runs differ."""
    import torch.utils.deterministic as det

    import retain.train as train

    adapter = get_policy("builtin-vla")
    data = synthetic_frames(4, 10, seed=0)

    def run(name: str) -> str:
        model = adapter.build({**TINY, "locate_weight": 1.0, "vision_film": True}, seed=0)
        train_bc(model, adapter, data, steps=6, lr=1e-3, batch_size=8, seed=3, threads=1)
        return _hash(model, adapter, tmp_path, name)

    assert det.fill_uninitialized_memory
    fast = run("fast")
    assert det.fill_uninitialized_memory  # restored on the way out
    monkeypatch.setattr(train, "FILL_NEW_MEMORY", True)
    assert run("filled") == fast
