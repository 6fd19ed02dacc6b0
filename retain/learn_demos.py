"""Demo sets for `learn`: the user's LeRobot folder or fsspec URL, or the built-in expert's demos.

Whatever the source, the demos end up as a local LeRobot-format folder plus the frames the
finetune trains on. The registry stores the folder as is (content-addressed, so `replay` can fetch
it), or, for a big dataset of the user's, only its location and a manifest of its files' hashes
(registry.demo_refs), which every later use checks.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from registry.errors import RegistryError, first_line, invalid, not_found
from retain.evaluate import sim_skills


DEMOS_STORE = ("auto", "copy", "reference")
REFERENCE_ABOVE = 1 << 30  # bytes; auto records a user's dataset larger than this by reference


@dataclasses.dataclass
class Demos:
    folder: Path  # a local LeRobot-format folder (stored in the registry as is)
    frames: Any  # retain.frames.DemoFrames
    source: str
    episodes: int


def load_demos(task: str, demos: Optional[str], work: Path, *, episodes: int = 50, seed: int = 0,
               expect: Optional[Mapping[str, Any]] = None, say: Callable[[str], None] = lambda msg: None,
               decode_images: bool = True) -> Demos:
    """The user's LeRobot folder / fsspec URL, or the built-in expert's narrow demos for a built-in task.

    `expect` (state_dim / action_dim / image_shape) refuses demos that do not fit the policy
    before any training starts. decode_images=False (the user's own trainer reads the dataset)
    checks everything but leaves the pixels, camera video included, undecoded.
    """
    from retain.data.lerobot import read_dataset
    from retain.frames import frames_from

    if demos is None:
        check_builtin(task)
        folder = work / "demos"
        say(f"collecting {episodes} expert demos of {task} (setting id, seed {seed})")
        collect_builtin_demos(task, episodes, seed, folder, image_size=(expect or {}).get("image_shape", (None,))[0])
        source = f"builtin-expert:{task}:id:n={episodes}:seed={seed}"
    else:
        folder = _local_copy(demos, work / "demos")
        source = demos
    frames = frames_from(read_dataset(folder, decode_images=decode_images, **dict(expect or {})))
    if len(frames) == 0:
        raise invalid(f"the demo set {source} is empty (0 frames); record at least one episode")
    return Demos(folder, frames, source, frames.episodes)


def check_builtin(task: str) -> None:
    """Without --demos only the simulator's skills have demos to collect."""
    if task not in sim_skills():
        raise invalid(f"unknown task {task!r} and no --demos; pass --demos PATH (a LeRobot folder or URL) or use one of {', '.join(sim_skills())}")


def collect_builtin_demos(task: str, episodes: int, seed: int, dest: Path, image_size: Optional[int] = None) -> Path:
    """The built-in scripted expert's demos of `task` in the narrow ID setting, as a LeRobot folder,
    rendered at the policy's `image_size` (None: the simulator's default)."""
    from retain.data.lerobot import write_dataset
    from retain.sim.demos import FPS, collect_episodes

    eps = collect_episodes(task, episodes, "id", seed, image_size=image_size)
    recipe = {"source": "retain-sim-expert", "task": task, "setting": "id", "seed": seed, "episodes": episodes}
    write_dataset(dest, eps, FPS, extra_info={"retain_recipe": recipe})
    return dest


def _local_copy(source: str, dest: Path) -> Path:
    """A local folder holding the demos: the path itself, or a download of an fsspec URL."""
    if "://" not in source:
        p = Path(source)
        if not p.exists():
            raise not_found(f"demos {source} do not exist; pass a LeRobot-format folder or an fsspec URL")
        return p
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(source)
        if not fs.exists(path):
            raise not_found(f"demos {source} do not exist; check the URL")
        fs.get(path.rstrip("/") + "/", str(dest), recursive=True)
    except RegistryError:
        raise
    except Exception as e:  # network, credentials, unknown protocol
        raise invalid(f"cannot read demos from {source}: {first_line(e)}") from None
    return dest


def check_demos_store(store: str, demos: Optional[str]) -> None:
    if store not in DEMOS_STORE:
        raise invalid(f"--demos-store must be one of {', '.join(DEMOS_STORE)}, got {store!r}")
    if store == "reference" and demos is None:
        raise invalid("--demos-store reference needs --demos PATH|URL: the built-in demos are made in a temporary folder "
                      "that will not last; drop the option or pass your dataset")


def demos_reference(d: Demos, demos: Optional[str], store: str) -> Optional[str]:
    """Where the user's dataset lives, when it is to be recorded by reference rather than copied:
    always with store="reference", above REFERENCE_ABOVE bytes with "auto", never for built-in demos."""
    if demos is None or store == "copy":
        return None
    if store == "auto" and sum(p.stat().st_size for p in Path(d.folder).rglob("*") if p.is_file()) <= REFERENCE_ABOVE:
        return None
    return demos if "://" in demos else str(Path(demos).resolve())


def expected_shapes(adapter, policy_config: Mapping[str, Any]) -> dict[str, Any]:
    """What the policy's config says its demos must look like (empty for adapters without a config)."""
    cfg = adapter.config(policy_config) if hasattr(adapter, "config") else None
    out: dict[str, Any] = {}
    if getattr(cfg, "state_dim", None):
        out["state_dim"] = int(cfg.state_dim)
    if getattr(cfg, "action_dim", None):
        out["action_dim"] = int(cfg.action_dim)
    if getattr(cfg, "image_size", None):
        out["image_shape"] = (int(cfg.image_size), int(cfg.image_size))
    return out
