"""Demonstration datasets in the LeRobot v3 layout (torch-free)."""
from __future__ import annotations

from retain.data.lerobot import read_dataset, write_dataset
from retain.data.lerobot_layout import DemoData, Episode

__all__ = ["DemoData", "Episode", "read_dataset", "write_dataset"]
