"""The merge-path control (benchmarks/merge_path.py): how far each modality moved is measured
per modality, relative to the pretrained weights, and ignores integer buffers."""

import pytest


torch = pytest.importorskip("torch")

from benchmarks.merge_path import relative_moves  # noqa: E402

from retain.partitions import get_partition_map  # noqa: E402


def test_each_modality_reports_its_own_relative_move():
    pre = {"vision.w": torch.full((4,), 2.0), "language.w": torch.ones(3, 3), "action.b": torch.ones(2),
           "action.steps": torch.tensor([5])}
    ft = {"vision.w": torch.full((4,), 2.0), "language.w": torch.ones(3, 3) * 1.5, "action.b": torch.tensor([1.0, 4.0]),
          "action.steps": torch.tensor([9])}
    moved = relative_moves(pre, ft, get_partition_map("builtin").modality_of)
    assert moved["vision"] == 0.0
    assert moved["language"] == pytest.approx(0.5)
    assert moved["action"] == pytest.approx(3.0 / 2**0.5)  # the int64 counter is not a weight


def test_names_outside_the_partition_are_counted_under_other():
    moved = relative_moves({"head.w": torch.ones(4)}, {"head.w": torch.zeros(4)}, lambda name: None)
    assert moved == {"other": pytest.approx(1.0)}
