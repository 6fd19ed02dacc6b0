"""The built-in tabletop simulator: generalist pretraining tasks, the new skills, scripted experts,
the narrow ID setting and the OOD variation families. Pure numpy; never imports torch.

    from retain import sim
    batch = sim.TabletopBatch(["plates"], "id", n=50, seed=0)
    obs = batch.reset()                      # {"image": (n, H, W, 3) uint8, "state": (n, STATE_DIM)}
    obs, success, done = batch.step(batch.expert_actions())
"""
from __future__ import annotations

from retain.sim.batch import TabletopBatch
from retain.sim.settings import OOD_FAMILIES, SETTINGS, Setting, get_setting, register_setting
from retain.sim.tasks import PRETRAIN_TASKS, SKILLS, TASKS, Task, get_task, max_steps
from retain.sim.world import ACTION_DIM, STATE_DIM, WorldConfig

IMAGE_SIZE: int = WorldConfig().image_size

__all__ = [
    "TabletopBatch", "PRETRAIN_TASKS", "SKILLS", "SETTINGS", "OOD_FAMILIES", "TASKS", "IMAGE_SIZE",
    "STATE_DIM", "ACTION_DIM", "max_steps", "get_task", "get_setting", "register_setting", "Setting", "Task", "WorldConfig",
]


def _register_env() -> None:
    import gymnasium

    if "retain/Tabletop-v0" not in gymnasium.registry:
        gymnasium.register(id="retain/Tabletop-v0", entry_point="retain.sim.env:TabletopEnv")


_register_env()
