"""`retain demos ...` through click's CliRunner: collection, reading back, and every bad input."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from cli import cli
from retain import sim
from retain.data import read_dataset
from retain.pretrain import shipped_image_size


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_collect_writes_a_readable_reproducible_dataset(tmp_path):
    r = run("demos", "collect", "whiteboard", "-n", "6", "--seed", "3", "-o", str(tmp_path / "a"), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["episodes"] == 6 and summary["instructions"] == ["wipe the marks off the board"]
    assert run("demos", "collect", "whiteboard", "-n", "6", "--seed", "3", "-o", str(tmp_path / "b")).exit_code == 0
    a, b = read_dataset(tmp_path / "a"), read_dataset(tmp_path / "b")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.action, b.action)
    assert a.num_episodes == 6 and a.num_frames == summary["frames"]
    size = shipped_image_size()  # by default demos fit the default base
    assert a.images.shape[1:] == (size, size, 3)
    assert a.state.shape[1] == sim.STATE_DIM and a.action.shape[1] == sim.ACTION_DIM
    assert a.info["retain_recipe"] == {"source": "retain-sim-expert", "task": "whiteboard", "setting": "id",
                                       "seed": 3, "episodes": 6, "image_size": size, "noise": 0.0}
    c = run("demos", "collect", "whiteboard", "-n", "6", "--seed", "4", "-o", str(tmp_path / "c"))
    assert c.exit_code == 0
    assert not np.array_equal(read_dataset(tmp_path / "c").images[:5], a.images[:5])


def test_collect_in_an_ood_setting_with_another_image_size(tmp_path):
    r = run("demos", "collect", "put-in-bowl", "-n", "4", "--setting", "generalist", "--image-size", "40",
            "-o", str(tmp_path / "g"))
    assert r.exit_code == 0, r.output
    d = read_dataset(tmp_path / "g")
    assert d.images.shape[1:] == (40, 40, 3)
    assert "wrote 4 episodes" in r.output


def test_noisy_demos_record_clean_expert_actions(tmp_path):
    r = run("demos", "collect", "plates", "-n", "8", "--noise", "0.1", "-o", str(tmp_path / "n"))
    assert r.exit_code == 0, r.output
    d = read_dataset(tmp_path / "n")
    assert d.num_episodes == 8
    # the expert's height and grip commands are exactly +-1; noisy executed ones would not be
    assert set(np.unique(d.action[:, 2:])) <= {-1.0, 1.0}
    assert run("demos", "collect", "plates", "-n", "8", "-o", str(tmp_path / "q")).exit_code == 0
    q = read_dataset(tmp_path / "q")
    starts = lambda data: {tuple(data.state[i]) for i in np.nonzero(data.frame_index == 0)[0]}  # noqa: E731
    assert len(starts(q) & starts(d)) >= 6                     # the same scenes (bar a dropped failure) ...
    assert not np.array_equal(q.state[:20], d.state[:20])      # ... but the noise moved the gripper


def test_show_summarises_a_dataset(tmp_path):
    assert run("demos", "collect", "plates", "-n", "3", "-o", str(tmp_path / "p")).exit_code == 0
    r = run("demos", "show", str(tmp_path / "p"))
    assert r.exit_code == 0
    assert "3 episodes" in r.output and "task 0: put the plate in the rack" in r.output
    j = json.loads(run("demos", "show", str(tmp_path / "p"), "--json").output)
    assert j["state_dim"] == sim.STATE_DIM and j["action_dim"] == sim.ACTION_DIM


def test_tasks_lists_tasks_skills_and_settings():
    j = json.loads(run("demos", "tasks", "--json").output)
    assert [t["name"] for t in j["skills"]] == sim.SKILLS
    assert len(j["pretraining"]) >= 20 and "ood:language" in j["settings"]


def test_bad_inputs_give_one_line_errors_and_write_nothing(tmp_path):
    out = tmp_path / "x"
    cases = [
        (["demos", "collect", "cups", "-o", str(out)], 4, "Error: unknown task 'cups'"),
        (["demos", "collect", "plates", "--setting", "ood:weather", "-o", str(out)], 4, "Error: unknown setting 'ood:weather'"),
        (["demos", "collect", "plates", "-n", "0", "-o", str(out)], 4, "Error: -n must be at least 1, got 0"),
        (["demos", "collect", "plates", "--image-size", "3", "-o", str(out)], 4, "Error: --image-size must be in [8, 256]"),
        (["demos", "collect", "plates", "--noise", "2", "-o", str(out)], 4, "Error: --noise must be in [0, 1], got 2.0"),
    ]
    for args, code, message in cases:
        r = run(*args)
        assert r.exit_code == code, (args, r.output)
        assert r.output.strip().splitlines() == [r.output.strip()] and r.output.startswith(message), r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []

    r = run("demos", "collect", "plates", "-n", "2", "-o", str(tmp_path / "no" / "such" / "dir"))
    assert r.exit_code == 9 and r.output.startswith(f"Error: folder {tmp_path / 'no' / 'such'} does not exist")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "taken"
    existing.mkdir()
    r = run("demos", "collect", "plates", "-n", "2", "-o", str(existing))
    assert r.exit_code == 3 and r.output.startswith(f"Error: output path {existing} already exists")
    assert list(existing.iterdir()) == []


def test_show_rejects_broken_datasets(tmp_path):
    (tmp_path / "nometa").mkdir()
    r = run("demos", "show", str(tmp_path / "nometa"))
    assert r.exit_code == 4 and r.output.startswith("Error: ") and "no meta/info.json" in r.output
    assert run("demos", "collect", "plates", "-n", "2", "-o", str(tmp_path / "p")).exit_code == 0
    f = tmp_path / "p" / "data" / "chunk-000" / "file-000.parquet"
    t = pq.read_table(f)
    short = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(t.num_rows * 3, np.float32)), 3)
    pq.write_table(t.set_column(t.column_names.index("action"), "action", short), f)
    r = run("demos", "show", str(tmp_path / "p"))
    assert r.exit_code == 4, r.output
    assert "'action' holds" in r.output and "declares shape [4]" in r.output and len(r.output.strip().splitlines()) == 1


def test_show_rejects_damaged_tasks_file(tmp_path):
    assert run("demos", "collect", "plates", "-n", "1", "-o", str(tmp_path / "p")).exit_code == 0
    (tmp_path / "p" / "meta" / "tasks.parquet").write_bytes(b"not parquet")
    r = run("demos", "show", str(tmp_path / "p"))
    assert r.exit_code == 7, r.output
    assert r.output.startswith("Error: ") and "cannot read tasks.parquet as parquet" in r.output
    assert len(r.output.strip().splitlines()) == 1
