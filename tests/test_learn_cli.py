"""`retain learn` through the CLI: output, --json, and every bad input of issue 5 (one clear line,
non-zero exit, nothing committed)."""
from __future__ import annotations

import glob
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli as root_cli
from learn_support import FAST_CLI, TINY, registry_state, save_tiny_model, tiny_registry


@pytest.fixture
def home(tmp_path):
    reg = tiny_registry(tmp_path)
    yield reg, str(tmp_path / "home")
    reg.close()


def run(home_dir: str, *args: str):
    return CliRunner().invoke(root_cli, ["--home", home_dir, *args], catch_exceptions=False)


def test_learn_prints_the_choice_and_scores_and_json_round_trips(home):
    reg, h = home
    r = run(h, "learn", "plates", *FAST_CLI)
    assert r.exit_code == 0, r.output
    assert "learned plates: v1 (parent v0" in r.output
    assert "chosen on ood:position" in r.output and "held-out OOD families" in r.output
    assert "plates ood:position (validation)" in r.output
    r2 = run(h, "learn", "whiteboard", *FAST_CLI, "--alpha", "0.5", "--threads", "2", "--json")
    assert r2.exit_code == 0, r2.output
    doc = json.loads(r2.stdout)
    assert [reg.learn_run_for(v).recipe["threads"] for v in ("v1", "v2")] == [1, 2]
    assert doc["version"]["name"] == "v2" and doc["alpha"] == 0.5 and doc["sweep"] == []
    assert {"skill": "plates", "split": "id"}.items() <= next(s for s in doc["scores"] if s["skill"] == "plates").items()


def _episode(t=4, image=32, state=5, action=4):
    from retain.data.lerobot_layout import Episode

    return Episode(np.zeros((t, image, image, 3), np.uint8), np.zeros((t, state), np.float32), np.zeros((t, action), np.float32), "wipe it")


def _dataset(path: Path, **shape) -> str:
    from retain.data.lerobot import write_dataset

    write_dataset(path, [_episode(**shape)], 10)
    return str(path)


def _empty_dataset(path: Path) -> str:
    import pyarrow.parquet as pq

    _dataset(path)
    for f in glob.glob(str(path / "data" / "**" / "*.parquet"), recursive=True) + glob.glob(str(path / "meta" / "episodes" / "**" / "*.parquet"), recursive=True):
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    info = json.loads((path / "meta" / "info.json").read_text())
    info.update(total_frames=0, total_episodes=0)
    (path / "meta" / "info.json").write_text(json.dumps(info))
    return str(path)


def _evaluator(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(body)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{checkpoint}}"


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (learn arguments, a fragment the one-line error must contain)."""
    save_tiny_model(tmp / "same-shape", seed=1)
    from retain.policies import get_policy

    adapter = get_policy("builtin-vla")
    adapter.save(adapter.build({**TINY, "d_model": 64, "d_action": 64}), tmp / "wider")
    from registry.checkpoint import open_checkpoint, save_tensors

    with open_checkpoint(tmp / "same-shape") as c:
        keep = {n: (c.specs[n].dtype, c.specs[n].shape, bytes(c.read(n))) for n in c.names if not n.startswith("action.")}
    save_tensors(tmp / "no-action.safetensors", keep)
    same = str(tmp / "same-shape")
    return {
        "unknown task": (["jump-rope"], "unknown task 'jump-rope' and no --demos"),
        "state shape": (["plates", "--demos", _dataset(tmp / "s7", state=7)], "observation.state has 7 values"),
        "action shape": (["plates", "--demos", _dataset(tmp / "a6", action=6)], "action has 6 values"),
        "image shape": (["plates", "--demos", _dataset(tmp / "i16", image=16)], "images are 16x16"),
        "empty demos": (["plates", "--demos", _empty_dataset(tmp / "empty")], "is empty"),
        "missing demos": (["plates", "--demos", str(tmp / "nowhere")], "do not exist"),
        "auto alpha nobody can score": (["my-skill", "--demos", _dataset(tmp / "ok")], "cannot choose alpha for 'my-skill'"),
        "mix too big": (["plates", "--mode", "co-ft", "--mix", "1.5"], "--mix 1.5 is outside [0, 1]"),
        "mix negative": (["plates", "--mix", "-0.2"], "outside [0, 1]"),
        "empty grid": (["plates", "--alpha-grid", ""], "alpha grid"),
        "grid out of range": (["plates", "--alpha-grid", "0.5,1.5"], "outside [0, 1]"),
        "bad alpha": (["plates", "--alpha", "language=0.5"], "alpha is missing vision, action"),
        "finetuned shapes": (["plates", "--finetuned", str(tmp / "wider")], "does not match the parent v0"),
        "finetuned keys": (["plates", "--finetuned", str(tmp / "no-action.safetensors")], "missing action."),
        "eval cmd fails": (["plates", "--finetuned", same, "--eval-cmd", _evaluator(tmp, "crash", "import sys; sys.exit('evaluator crashed')")],
                           "--eval-cmd failed with exit status 1"),
        "eval cmd no json": (["plates", "--finetuned", same, "--eval-cmd", _evaluator(tmp, "chatty", "print('great success')")],
                             "printed no JSON"),
        "eval cmd no placeholder": (["plates", "--eval-cmd", "python eval.py"], "placeholder"),
        "unknown ref": (["plates", "--ref", "nope"], "ref 'nope' does not exist"),
        "bad validation family": (["plates", "--val-family", "id"], "not an OOD family"),
        "unknown validation family": (["plates", "--val-family", "ood:weather"], "is not one of the simulator's"),
        "nproc zero": (["plates", "--nproc-per-node", "0"], "--nproc-per-node must be at least 1"),
        "threads zero": (["plates", "--threads", "0"], "--threads must be at least 1"),
        "malformed lr scale": (["plates", "--lr-scale", "vision"], "write NAME=FACTOR"),
        "lr scale of no module": (["plates", "--lr-scale", "visoin=0.1"], "starts no parameter name"),
        "lr scale of no module under DDP": (["plates", "--lr-scale", "visoin=0.1", "--nproc-per-node", "2"], "starts no parameter name"),
        "unknown device": (["plates", "--device", "tpu"], "unknown device 'tpu'"),
        "bf16 on the cpu": (["plates", "--device", "cpu", "--bf16"], "GPU only"),
        "compile under DDP": (["plates", "--compile", "--nproc-per-node", "2"], "--compile trains in one process"),
        **({} if _has_gpu() else {"cuda without a gpu": (["plates", "--device", "cuda"], "torch sees none")}),
    }


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_every_bad_input_is_one_clear_line_and_commits_nothing(home, tmp_path):
    reg, h = home
    before = registry_state(reg)
    failures = []
    for name, (args, fragment) in _bad_cases(tmp_path).items():
        r = run(h, "learn", *args, *FAST_CLI)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        ok = (r.exit_code not in (0, 1) and "Traceback" not in r.output and len(lines) == 1
              and lines[0].startswith("Error: ") and fragment in lines[0])
        if not ok:
            failures.append(f"{name}: exit {r.exit_code}: {r.output!r}")
        assert registry_state(reg) == before, name
    assert not failures, "\n".join(failures)
    assert reg.verify().ok


def test_the_command_modules_and_the_api_import_no_torch():
    import subprocess

    code = ("import sys, retain.commands.learn_cmds, retain.api, retain.select, retain.external_eval; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_learn_warns_when_the_alpha_sweep_saw_no_difference(home):
    reg, h = home
    r = run(h, "learn", "plates", *FAST_CLI, "--json", "-q")
    assert r.exit_code == 0, r.output
    sweep = json.loads(r.stdout)["sweep"]
    assert len(sweep) == 3 and len({json.dumps(s["scores"]["ood:position"]["rate"]) for s in sweep}) == 1  # a tiny untrained policy solves nothing
    assert ("warning: every alpha candidate scored 0.00 on ood:position, so alpha action=1,language=0.25,vision=1 "
            "is only the tie-break toward the parent") in r.stderr
