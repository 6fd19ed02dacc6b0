"""Finetuning a real tiny policy: seeded, task-ft and co-ft, and under torchrun/DDP with 2 processes."""
from __future__ import annotations

import numpy as np
import pytest

from learn_support import save_tiny_model, synthetic_frames, tiny_config
from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import RegistryError
from retain.finetune import FinetuneRecipe, finetune


def _hash(path) -> str:
    with open_checkpoint(path) as c:
        return weight_hash(c)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("parent") / "v0")


def test_task_ft_is_seeded_and_learns(parent, tmp_path):
    demos = synthetic_frames()
    recipe = FinetuneRecipe(steps=30, lr=3e-3, batch_size=16, seed=3, threads=1)
    a = finetune(parent, tiny_config(), demos, recipe, tmp_path / "a")
    b = finetune(parent, tiny_config(), demos, recipe, tmp_path / "b")
    c = finetune(parent, tiny_config(), demos, FinetuneRecipe(**{**recipe.to_dict(), "seed": 4}), tmp_path / "c")
    assert _hash(a.checkpoint) == _hash(b.checkpoint) != _hash(parent)
    assert _hash(c.checkpoint) != _hash(a.checkpoint)
    assert a.final_loss < a.first_loss


def test_co_ft_mixes_pretraining_frames(parent, tmp_path):
    demos = synthetic_frames()
    other = synthetic_frames(seed=9, instruction="pick up the red cube")
    task = finetune(parent, tiny_config(), demos, FinetuneRecipe(steps=10, batch_size=8, threads=1), tmp_path / "t")
    co = finetune(parent, tiny_config(), demos, FinetuneRecipe(mode="co-ft", mix=0.5, steps=10, batch_size=8, threads=1),
                  tmp_path / "c", pretrain_frames=other)
    assert _hash(task.checkpoint) != _hash(co.checkpoint)
    with pytest.raises(RegistryError, match="co-ft needs pretraining data"):
        finetune(parent, tiny_config(), demos, FinetuneRecipe(mode="co-ft", mix=0.5, steps=1), tmp_path / "x")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"mix": 1.5}, "outside [0, 1]"),
    ({"mix": -0.1}, "outside [0, 1]"),
    ({"mode": "co-ft", "mix": 1.0}, "no room"),
    ({"mode": "lora"}, "unknown finetune mode"),
    ({"steps": 0}, "--steps"),
    ({"rehearse": 1.0}, "--rehearse 1.0 is outside [0, 1)"),
    ({"mode": "co-ft", "mix": 0.6, "rehearse": 0.4}, "leave no room"),
])
def test_bad_recipes_are_refused(kwargs, fragment):
    with pytest.raises(RegistryError) as e:
        FinetuneRecipe(**kwargs)
    assert fragment in str(e.value)


def test_rehearsal_mixes_earlier_skills_demos_and_needs_them(parent, tmp_path):
    demos = synthetic_frames()
    earlier = synthetic_frames(seed=5, instruction="wipe the marks off the board")
    recipe = FinetuneRecipe(steps=10, batch_size=8, threads=1, rehearse=0.25)
    plain = finetune(parent, tiny_config(), demos, FinetuneRecipe(steps=10, batch_size=8, threads=1), tmp_path / "p")
    a = finetune(parent, tiny_config(), demos, recipe, tmp_path / "a", rehearsal_frames=earlier)
    b = finetune(parent, tiny_config(), demos, recipe, tmp_path / "b", rehearsal_frames=earlier)
    assert _hash(a.checkpoint) == _hash(b.checkpoint) != _hash(plain.checkpoint)
    with pytest.raises(RegistryError, match="--rehearse needs the demos"):
        finetune(parent, tiny_config(), demos, recipe, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_empty_demo_set_is_refused(parent, tmp_path):
    empty = synthetic_frames(episodes=0)
    with pytest.raises(RegistryError, match="empty"):
        finetune(parent, tiny_config(), empty, FinetuneRecipe(steps=1), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_a_version_without_policy_config_cannot_be_finetuned(parent, tmp_path):
    with pytest.raises(RegistryError, match="--finetuned"):
        finetune(parent, {}, synthetic_frames(), FinetuneRecipe(steps=1), tmp_path / "n")


@pytest.mark.slow
def test_ddp_with_two_processes_keeps_ranks_in_sync(parent, tmp_path):
    """torchrun + DDP (gloo): both ranks end bit-identical (checked inside finetune), the weights moved,
    and the result differs from one process's (each rank draws its own half of every batch).
    That a DDP finetune replays bit for bit is tested through `learn` in test_learn_modes.py."""
    demos = synthetic_frames()
    recipe = FinetuneRecipe(steps=8, batch_size=8, seed=1, threads=1, nproc=2)
    a = finetune(parent, tiny_config(), demos, recipe, tmp_path / "ddp")
    single = finetune(parent, tiny_config(), demos, FinetuneRecipe(**{**recipe.to_dict(), "nproc": 1}), tmp_path / "one")
    assert _hash(a.checkpoint) not in (_hash(parent), _hash(single.checkpoint))
    with open_checkpoint(a.checkpoint) as ca, open_checkpoint(parent) as cp:
        moved = [n for n in ca.names if not np.array_equal(ca.array(n), cp.array(n))]
    assert moved, "the distributed finetune changed no weight"


@pytest.mark.slow
def test_ddp_ranks_rehearse_the_earlier_skills_demos_too(parent, tmp_path):
    """The rehearsal frames travel to the ranks: with them the DDP finetune is another, and seeded."""
    demos = synthetic_frames()
    earlier = synthetic_frames(seed=5, instruction="wipe the marks off the board")
    recipe = FinetuneRecipe(steps=6, batch_size=8, seed=1, threads=1, nproc=2)
    plain = finetune(parent, tiny_config(), demos, recipe, tmp_path / "plain")
    rehearsing = FinetuneRecipe(**{**recipe.to_dict(), "rehearse": 0.25})
    a = finetune(parent, tiny_config(), demos, rehearsing, tmp_path / "a", rehearsal_frames=earlier)
    b = finetune(parent, tiny_config(), demos, rehearsing, tmp_path / "b", rehearsal_frames=earlier)
    assert _hash(a.checkpoint) == _hash(b.checkpoint) != _hash(plain.checkpoint)


@pytest.mark.slow
def test_ddp_finetunes_a_base_with_a_pretraining_only_head(tmp_path):
    """The default base's locate head gets no gradient from demos (they carry no targets); DDP
    must still sync the rest and leave the head as it was."""
    from retain.policies import get_policy

    config = {"policy": "builtin-vla", "policy_config": {**tiny_config()["policy_config"], "vision_film": True, "locate_weight": 1.0}}
    adapter = get_policy("builtin-vla")
    parent = adapter.save(adapter.build(config["policy_config"], seed=0), tmp_path / "v0")
    res = finetune(parent, config, synthetic_frames(), FinetuneRecipe(steps=4, batch_size=8, seed=1, threads=1, nproc=2), tmp_path / "ddp")
    with open_checkpoint(res.checkpoint) as ca, open_checkpoint(parent) as cp:
        moved = {n for n in ca.names if not np.array_equal(ca.array(n), cp.array(n))}
    assert moved and not any(n.startswith("vision.locate.") for n in moved)


@pytest.mark.slow
def test_a_rank_that_aborts_after_the_weights_are_saved_and_checked_does_not_fail_the_finetune(parent, tmp_path, monkeypatch):
    """CI saw a rank end in SIGABRT now and then; the weights count if rank 0 had saved them and
    every rank's hash had been gathered before, and the result says what happened."""
    recipe = FinetuneRecipe(steps=4, batch_size=8, seed=1, threads=1, nproc=2)
    clean = finetune(parent, tiny_config(), synthetic_frames(), recipe, tmp_path / "clean")
    assert clean.warning == ""
    monkeypatch.setenv("RETAIN_DDP_ABORT", "after-result")
    late = finetune(parent, tiny_config(), synthetic_frames(), recipe, tmp_path / "late")
    assert "after the finetune was saved and checked" in late.warning
    assert _hash(late.checkpoint) == _hash(clean.checkpoint)


@pytest.mark.slow
def test_a_rank_that_aborts_before_the_check_fails_the_finetune_and_writes_nothing(parent, tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_DDP_ABORT", "before-result")
    recipe = FinetuneRecipe(steps=4, batch_size=8, seed=1, threads=1, nproc=2)
    # which rank's failure torchrun reports first is a race: the aborted one (exitcode -6) or its
    # peer's "Connection reset by peer"; either way one line that names it and the way out
    with pytest.raises(RegistryError, match=r"^the distributed finetune \(2 processes\) failed: \S.*; try --nproc-per-node 1$"):
        finetune(parent, tiny_config(), synthetic_frames(), recipe, tmp_path / "early")
    assert not (tmp_path / "early").exists()


TORCHRUN_FAILURE = """[rank1]: Traceback (most recent call last):
[rank1]:   File "retain/finetune.py", line 240, in _worker
[rank1]: RuntimeError: Connection reset by peer
E1201 11:00:00.000000 42 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 1 (pid: 43) of binary: python
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
retain.finetune FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_11:00:00
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 43)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_a_failed_torchrun_is_reported_by_the_workers_exception_not_torchruns_summary():
    from retain.finetune import _last_error

    assert _last_error(TORCHRUN_FAILURE) == "[rank1]: RuntimeError: Connection reset by peer; exitcode : 1 (pid: 43)"
    killed = "Root Cause (first observed failure):\n  exitcode  : -9 (pid: 7)\n  error_file: <N/A>\n"
    assert _last_error(killed) == "exitcode : -9 (pid: 7)"  # a rank killed by a signal raises nothing
    assert _last_error("") == "no output"


def test_a_rank_aborted_in_cpp_is_reported_by_the_abort_reason():
    from retain.finetune import _last_error

    aborted = ("terminate called after throwing an instance of 'gloo::IoException'\n"
               "  what():  [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500\n"
               "Root Cause (first observed failure):\n  exitcode  : -6 (pid: 24255)\n  error_file: <N/A>\n")
    assert _last_error(aborted) == ("what(): [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500; "
                                    "exitcode : -6 (pid: 24255)")
