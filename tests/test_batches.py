"""The batch pipeline: a batch depends only on the seeded generator (never on the prefetch thread's
timing), instructions are encoded once per distinct instruction, and device plumbing refuses
what it cannot do in one line (CPU-only logic: no GPU needed)."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch

from registry.errors import RegistryError
from retain.batches import Prefetcher, Sampler
from retain.device import check_bf16, device_kind, resolve_device
from retain.policies import get_policy
from retain.policies.builtin_vla import TOKEN_IDS, TOKEN_MASK
from retain.provenance import runtime, runtime_changes
from retain.frames import ChunkFrames
from retain.train import train_bc
from test_train_bc import TINY, synthetic_frames

ADAPTER = get_policy("builtin-vla")


def _sources():
    model = ADAPTER.build(TINY)

    def encode(texts):
        return ADAPTER.encode_instructions(model, texts)

    demos = synthetic_frames(3, 8, seed=1, instruction="wipe the board")
    n = 10
    rng = np.random.default_rng(0)
    chunks = ChunkFrames(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), state=rng.normal(size=(n, 5)).astype(np.float32),
                         chunks=rng.normal(size=(n, 4, 4)).astype(np.float32), pad=np.zeros((n, 4), bool),
                         instructions=[["put the cup away", "open the drawer"][i % 2] for i in range(n)])
    return model, [(Sampler(demos, 4, encode=encode), 6), (Sampler(chunks, 4, encode=encode), 2)]


def _all(parts, depth: int, slow_consumer: bool = False):
    gen = torch.Generator().manual_seed(11)
    out = []
    with Prefetcher(parts, gen, 0, 12, depth=depth) as batches:
        for batch, state in batches:
            if slow_consumer:
                time.sleep(random.random() * 0.01)  # the thread runs ahead by varying amounts
            out.append((batch, state))
    return out


def test_prefetched_batches_are_the_ones_drawn_in_turn_whatever_the_timing():
    _, parts = _sources()
    inline, ahead = _all(parts, 0), _all(parts, 3, slow_consumer=True)
    assert len(inline) == len(ahead) == 12
    for (a, sa), (b, sb) in zip(inline, ahead):
        assert a.keys() == b.keys() and a["instruction"] == b["instruction"] and torch.equal(sa, sb)
        assert all(torch.equal(a[k], b[k]) for k in a if k != "instruction")


def test_instructions_are_encoded_once_per_instruction_and_gathered_per_frame():
    model, parts = _sources()
    batch = _all(parts, 0)[0][0]
    ids, mask = model.tokenize(batch["instruction"])
    assert batch["instruction"].count("wipe the board") == 6
    assert torch.equal(batch[TOKEN_IDS], ids) and torch.equal(batch[TOKEN_MASK], mask)
    assert sorted(parts[1][0].texts) == ["open the drawer", "put the cup away"]  # 10 frames, 2 encodings
    loss_given, _ = ADAPTER.loss(model, batch)
    loss_tokenized, _ = ADAPTER.loss(model, {k: v for k, v in batch.items() if k not in (TOKEN_IDS, TOKEN_MASK)})
    assert torch.equal(loss_given, loss_tokenized)


def test_a_failure_while_building_batches_reaches_the_training_loop():
    class Broken(Sampler):
        def take(self, idx):
            raise ValueError("bad frame")

    _, parts = _sources()
    broken = Broken.__new__(Broken)
    broken.__dict__.update(parts[0][0].__dict__)
    with pytest.raises(ValueError, match="bad frame"):
        _all([(broken, 4)], 3)


def test_a_diverging_run_stops_with_the_step_even_though_losses_are_read_in_bulk():
    model = ADAPTER.build(TINY)
    with pytest.raises(RegistryError, match="diverged at step"):
        train_bc(model, ADAPTER, synthetic_frames(2, 6, 0), 20, 1e30, 4, 0, threads=1, log_every=50)


def test_device_choice_auto_cpu_and_refusals():
    assert resolve_device("cpu") == "cpu" and device_kind("cuda:3") == "cuda"
    assert resolve_device(None) == resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cpu:1", "cuda:x", ""):
        with pytest.raises(RegistryError, match="unknown device"):
            resolve_device(bad or "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RegistryError, match="torch sees none"):
            resolve_device("cuda")
    with pytest.raises(RegistryError, match="GPU only"):
        check_bf16("cpu", True)
    with pytest.raises(RegistryError, match="GPU only"):
        train_bc(ADAPTER.build(TINY), ADAPTER, synthetic_frames(1, 4, 0), 2, 1e-3, 4, 0, bf16=True)


def test_a_run_on_another_device_kind_says_so_and_cpu_records_stay_as_they_were():
    cpu = runtime("cpu")
    assert "device" not in cpu and runtime() == cpu
    assert runtime_changes(cpu, cpu) == ""
    gpu = {**cpu, "device": "cuda NVIDIA H200"}
    assert runtime_changes(cpu, gpu) == "device cpu -> cuda NVIDIA H200"
    assert runtime_changes(gpu, cpu) == "device cuda NVIDIA H200 -> cpu"
