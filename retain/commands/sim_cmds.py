"""`retain demos ...`: scripted demonstrations from the built-in simulator, as LeRobot datasets."""
from __future__ import annotations

import click

from registry.cli_support import emit, json_option


@click.group("demos")
def demos_group() -> None:
    """Scripted demonstrations in the built-in tabletop simulator (LeRobot v3 datasets)."""


@demos_group.command("collect")
@click.argument("task")
@click.option("-n", "--episodes", "n", type=int, default=50, show_default=True, help="Successful episodes to record.")
@click.option("--setting", default="id", show_default=True, help="Where the scenes come from (see `demos tasks`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the scenes; same seed, same dataset.")
@click.option("--image-size", type=int, default=None,
              help="Image side in pixels (default: what the shipped default base sees, 64).")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Std of noise added to executed (not recorded) actions, so demos show recoveries.")
@click.option("--video", is_flag=True,
              help="Store the camera as MP4 video, as LeRobot records real robots (needs the [video] extra).")
@click.option("--vcodec", type=click.Choice(["av1", "h264", "hevc"]), default="av1", show_default=True,
              help="Codec of --video (av1 is LeRobot's default).")
@click.option("-o", "--output", "output", required=True, type=click.Path(), help="New dataset folder to write.")
@json_option
def collect_cmd(task: str, n: int, setting: str, seed: int, image_size: int | None, noise: float, video: bool,
                vcodec: str, output: str, as_json: bool) -> None:
    """Record N expert demos of TASK and write them as a LeRobot v3 dataset.

    Example: retain demos collect plates -n 50 --setting id --seed 0 -o demos/plates [--video]
    """
    from pathlib import Path

    from registry.errors import already_exists, invalid, not_found
    from retain import sim
    from retain.data.lerobot import write_dataset
    from retain.pretrain import shipped_image_size
    from retain.sim.demos import FPS, collect_episodes

    if n < 1:
        raise invalid(f"-n must be at least 1, got {n}")
    sim.get_task(task)
    sim.get_setting(setting)
    if Path(output).exists():
        raise already_exists(f"output path {output} already exists; choose a new path or remove it first")
    if not Path(output).parent.exists():
        raise not_found(f"folder {Path(output).parent} does not exist; create it first")
    if image_size is None:
        image_size = shipped_image_size()
    if not 8 <= image_size <= 256:
        raise invalid(f"--image-size must be in [8, 256], got {image_size}")
    if not 0.0 <= noise <= 1.0:
        raise invalid(f"--noise must be in [0, 1], got {noise}")
    if video:
        from retain.data.video import require_av

        require_av()
        if image_size % 2:
            raise invalid(f"--video needs an even --image-size (yuv420p video), got {image_size}")
    episodes = collect_episodes(task, n, setting, seed, image_size=image_size, noise=noise)
    recipe = {"source": "retain-sim-expert", "task": task, "setting": setting, "seed": seed, "episodes": n,
              "image_size": int(episodes[0].images.shape[1]), "noise": noise}
    if video:
        recipe["video"] = vcodec
    write_dataset(output, episodes, FPS, extra_info={"retain_recipe": recipe}, video=video, vcodec=vcodec)
    frames = sum(int(e.state.shape[0]) for e in episodes)
    summary = {"path": output, "task": task, "setting": setting, "seed": seed, "episodes": len(episodes),
               "frames": frames, "instructions": sorted({e.instruction for e in episodes}),
               "video": vcodec if video else None}
    emit(summary, as_json, lambda s: f"wrote {s['episodes']} episodes ({s['frames']} frames) of {task} "
                                     f"[{setting}, seed {seed}] to {output}" + (f" (camera as {vcodec} video)" if video else ""))


@demos_group.command("show")
@click.argument("path")
@json_option
def show_cmd(path: str, as_json: bool) -> None:
    """Check a LeRobot dataset (local folder or fsspec URL) and summarise it.

    Example: retain demos show demos/plates
    """
    from retain.data.lerobot import read_dataset

    d = read_dataset(path)
    feature = d.info["features"][f"observation.images.{d.camera}"]
    video = (feature.get("info") or {}).get("video.codec", "?") if feature.get("dtype") == "video" else None
    summary = {"path": path, "episodes": d.num_episodes, "frames": d.num_frames, "fps": d.fps, "camera": d.camera,
               "image_shape": list(d.images.shape[1:]), "video": video, "state_dim": int(d.state.shape[1]),
               "action_dim": int(d.action.shape[1]), "tasks": d.tasks}
    emit(summary, as_json, lambda s: "\n".join(
        [f"{s['episodes']} episodes, {s['frames']} frames at {s['fps']:g} fps; camera {s['camera']} "
         f"{'x'.join(map(str, s['image_shape']))}{' (' + s['video'] + ' video)' if s['video'] else ''}; "
         f"state {s['state_dim']}, action {s['action_dim']}"]
        + [f"  task {i}: {t}" for i, t in enumerate(s["tasks"])]))


@demos_group.command("tasks")
@json_option
def tasks_cmd(as_json: bool) -> None:
    """List the simulator's tasks, new skills and settings.

    Example: retain demos tasks --json
    """
    from retain import sim

    def describe(name: str) -> dict:
        t = sim.get_task(name)
        return {"name": name, "behaviour": t.behaviour.name.lower(), "max_steps": t.max_steps,
                "instruction": t.templates[0]}

    out = {"pretraining": [describe(t) for t in sim.PRETRAIN_TASKS], "skills": [describe(t) for t in sim.SKILLS],
           "settings": {s: sim.get_setting(s).description for s in sim.SETTINGS}}

    def text(o: dict) -> str:
        lines = ["pretraining tasks:"] + [f"  {t['name']:<18} {t['instruction']}" for t in o["pretraining"]]
        lines += ["new skills:"] + [f"  {t['name']:<18} {t['instruction']}" for t in o["skills"]]
        lines += ["settings:"] + [f"  {k:<16} {v}" for k, v in o["settings"].items()]
        return "\n".join(lines)

    emit(out, as_json, text)
