"""Everything the CLI does, one call away in Python. The CLI is a thin layer over these.

`registry` (the store) never imports `retain` (the method), so the learning calls are functions
that take an open `Registry` rather than methods on it:

    from retain.api import Registry, LearnOptions, learn, replay, continual_scores

    with Registry.open(home=".retain", create=True) as reg:
        res = learn(reg, "plates", LearnOptions(episodes=50))       # finetune, choose alpha, merge, commit
        print(res.version.name, res.alpha)
        learn(reg, "whiteboard")
        matrix, summary = continual_scores(reg, ref="main")         # skills x versions, forgetting, BWT
        reg.rollback(res.version.name)                              # registry operations are methods
        check = replay(reg, ["whiteboard"])                         # re-run and verify hashes bit for bit
        assert check.reproduced

    pretrain(PretrainRecipe.preset("default", device="cuda"), "base", run_dir="runs/big")  # checkpointed
    resume_pretrain("runs/big", "base")                             # after a stop: from the last checkpoint

Importing this module does not import torch; the calls do, when they need it.
"""
from __future__ import annotations

from registry.api import Registry
from registry.continual import (
    ContinualSummary,
    ScoreMatrix,
    continual_scores,
    continual_summary,
    format_matrix,
    format_summary,
    history_along,
    score_matrix,
)
from retain.learn import LearnResult, learn
from retain.learn_options import LearnOptions
from retain.pretrain_recipe import PretrainRecipe, PretrainResult
from retain.pretrain import pretrain, resume_pretrain
from retain.replay import ReplayResult, replay


__all__ = [
    "Registry", "LearnOptions", "LearnResult", "learn", "ReplayResult", "replay", "continual_scores",
    "score_matrix", "continual_summary", "format_matrix", "format_summary", "history_along",
    "PretrainRecipe", "PretrainResult", "pretrain", "resume_pretrain",
]
