"""Demonstration datasets in the LeRobot v3 layout (torch-free)."""
from __future__ import annotations

from retain.data.lerobot import DemoData, Episode, read_dataset, write_dataset

__all__ = ["DemoData", "Episode", "read_dataset", "write_dataset"]
