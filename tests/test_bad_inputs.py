"""A corpus of bad inputs, by class (issue 26): each gets one `Error:` line, its exit code, and
leaves the registry as it was (verify clean, no rows, no store files, no work or temp folders).

Each class is one list and one test, so `python -m pytest -q tests/test_bad_inputs.py -rA`
shows how many inputs each class holds (see docs/hardening.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bad_input_kit import assert_one_line_error, assert_unchanged, overwrite_blob, private_tmp, state  # noqa: F401 (fixture)
from registry.errors import Code
from test_checkpoint_conformance import HAND, S1, S2, _ours, _shards



@pytest.fixture
def populated(registry, make_checkpoint, cli, private_tmp):
    assert cli("base", "import", str(make_checkpoint("base.safetensors", seed=0)), "--name", "tiny").exit_code == 0
    return registry


def _refused_hand_cases(tmp_path: Path) -> list[Path]:
    out = []
    for name, blob in HAND:
        path = tmp_path / "corpus" / name / "model.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(blob)
        if not _ours(path)[0] or name in ("empty-header", "empty-header-padded", "only-metadata"):
            out.append(path)
    return out


def safetensors_corpus(tmp_path: Path) -> list[Path]:
    """Every hand-written malformed header of the conformance corpus, empty headers, bad indexes."""
    out = _refused_hand_cases(tmp_path)
    for i, wm in enumerate([{"a": S1, "b": S1, "c": S2, "d": S1}, {"a": S1, "b": S2, "c": S2}, {"a": S1, "c": S2}, {"a": 1}]):
        out.append(_shards(tmp_path / f"index{i}", wm))
    return out


def test_safetensors_conformance_at_base_import(populated, cli, tmp_path):
    corpus = safetensors_corpus(tmp_path)
    assert len(corpus) >= 50
    before = state(populated)
    for path in corpus:
        assert_one_line_error(cli("base", "import", str(path)), Code.INVALID_VALUE, str(path.parent.name))
    assert_unchanged(populated, before)


# ------------------------------------------------------------------------------- hangs and crashes

def _special_paths(tmp_path: Path, make_checkpoint) -> list[tuple[list[str], Code, str]]:
    """(arguments, exit kind, message fragment): non-regular files, symlink loops, odd names."""
    d = tmp_path / "special"
    d.mkdir()
    fifo_dir = d / "fifo-folder"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "model.safetensors")
    os.mkfifo(d / "bare.safetensors")
    loop_dir = d / "loop-folder"
    loop_dir.mkdir()
    os.symlink("model.safetensors", loop_dir / "model.safetensors")
    os.symlink("self.safetensors", d / "self.safetensors")
    os.symlink(d / "absent.safetensors", d / "dangling.safetensors")
    dir_dir = d / "dir-folder"
    (dir_dir / "model.safetensors").mkdir(parents=True)
    os.mkfifo(d / "config.json")
    good = str(make_checkpoint("good.safetensors", seed=3))
    unknown = d / "unknown-policy.json"
    unknown.write_text('{"policy": "no-such-policy"}')
    number = d / "number-policy.json"
    number.write_text('{"policy": 7}')
    return [
        (["base", "import", str(fifo_dir)], Code.INVALID_VALUE, "is a FIFO (named pipe), not a regular file"),
        (["base", "import", str(d / "bare.safetensors")], Code.INVALID_VALUE, "is a FIFO"),
        (["base", "import", str(loop_dir)], Code.INVALID_VALUE, "symbolic link that loops"),
        (["base", "import", str(d / "self.safetensors")], Code.INVALID_VALUE, "symbolic link that loops"),
        (["base", "import", str(d / "dangling.safetensors")], Code.NOT_FOUND, "symbolic link to a missing file"),
        (["base", "import", str(dir_dir)], Code.INVALID_VALUE, "is a folder, not a regular file"),
        (["base", "import", good, "--config", str(d / "config.json")], Code.INVALID_VALUE, "--config"),
        (["base", "import", good, "--config", str(unknown)], Code.INVALID_VALUE, "policy 'no-such-policy', which is not installed"),
        (["base", "import", good, "--config", str(number)], Code.INVALID_VALUE, "must be a JSON object with a \"policy\" name"),
        (["gc", "--grace", "nan"], Code.INVALID_VALUE, "must be a finite number of seconds"),
        (["gc", "--grace", "inf"], Code.INVALID_VALUE, "must be a finite number of seconds"),
        (["gc", "--grace", "-1"], Code.INVALID_VALUE, "must be a finite number of seconds"),
        (["db", "upgrade", "--revision", "nope"], Code.INVALID_VALUE, "unknown schema revision 'nope'"),
        (["db", "upgrade", "--revision", "0001"], Code.INVALID_VALUE, "`db upgrade` never goes back"),
        (["show", "v1\nmain"], Code.NOT_FOUND, "'v1\\nmain' is neither"),
        (["show", "ma\rin"], Code.NOT_FOUND, "'ma\\rin' is neither"),
        (["log", "--ref", "a\nb"], Code.NOT_FOUND, "ref 'a\\nb' does not exist"),
        (["rollback", "v0", "--ref", "x\ny"], Code.NOT_FOUND, "ref 'x\\ny' does not exist"),
        (["base", "import", good, "--ref", "new\nref"], Code.INVALID_VALUE, "ref name 'new\\nref' is not allowed"),
        (["base", "import", good, "--name", "a\x1bb"], Code.INVALID_VALUE, "base name 'a\\x1bb' is not allowed"),
    ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # processes are slow; the database plays no part
def test_inputs_that_hung_or_crashed_get_one_line(populated, make_checkpoint, tmp_path):
    """Run as real processes with a deadline: a FIFO must not hang, nothing may print a traceback."""
    import subprocess

    from conftest import cli_argv

    cases = _special_paths(tmp_path, make_checkpoint)
    before = state(populated)
    failures = []
    for args, code, fragment in cases:
        r = subprocess.run(cli_argv(populated, *args), capture_output=True, text=True, timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        if not (r.returncode == code.value and r.stdout == "" and len(lines) == 1 and lines[0].startswith("Error: ")
                and fragment in lines[0]):
            failures.append(f"{args!r}: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")
    assert not failures, "\n".join(failures)
    assert_unchanged(populated, before)


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_bad_fault_hook_value_refuses_before_storing_anything(populated, make_checkpoint, cli, monkeypatch, value):
    src = str(make_checkpoint("fault.safetensors", seed=5))
    monkeypatch.setenv("RETAIN_FAULT_PAUSE_AFTER_BLOBS", value)
    before = state(populated)
    assert_one_line_error(cli("base", "import", src), Code.INVALID_VALUE, "RETAIN_FAULT_PAUSE_AFTER_BLOBS")
    assert_unchanged(populated, before)


def _demo_variant(path: Path, column: str, change) -> str:
    """A valid tiny LeRobot dataset whose `column` rows are rewritten by change(list of rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retain.data.lerobot import write_dataset
    from retain.data.lerobot_layout import Episode

    write_dataset(path, [Episode(np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 5), np.float32),
                                 np.zeros((4, 4), np.float32), "wipe it")], 10)
    f = next(path.glob("data/**/*.parquet"))
    t = pq.read_table(f)
    rows = change(t.column(column).to_pylist())
    t = t.set_column(t.column_names.index(column), column, pa.array(rows, pa.list_(pa.float32())))
    pq.write_table(t, f)
    return str(path)


def _ragged(rows):
    rows[1], rows[2] = rows[1][:-1], rows[2] + [0.0]  # the total still matches the declared shape
    return rows


def _short(rows):
    rows[3] = rows[3][:-2]
    return rows


def _with(value):
    def change(rows):
        rows[2][0] = value
        return rows
    return change


def test_demo_data_that_crashed_or_warned_gets_one_line(tmp_path, private_tmp):
    """Ragged or non-finite state and action rows: one line, no torch warning, nothing committed."""
    from click.testing import CliRunner

    from cli import cli as root_cli
    from learn_support import FAST_CLI, tiny_registry

    reg = tiny_registry(tmp_path)
    try:
        cases = [
            ("observation.state", _ragged, "is ragged"), ("observation.state", _short, "is ragged"),
            ("action", _ragged, "is ragged"), ("action", _with(float("nan")), "holds NaN or inf"),
            ("action", _with(float("inf")), "holds NaN or inf"), ("observation.state", _with(float("nan")), "holds NaN or inf"),
            ("observation.state", _with(1e39), "holds NaN or inf"),  # beyond float32: inf once converted
        ]
        before = state(reg)
        for i, (column, change, fragment) in enumerate(cases):
            demos = _demo_variant(tmp_path / f"demos{i}", column, change)
            r = CliRunner().invoke(root_cli, ["--home", str(tmp_path / "home"), "learn", "plates", "--demos", demos, *FAST_CLI],
                                   catch_exceptions=False)
            assert_one_line_error(r, Code.INVALID_VALUE, fragment, repr(column))
        for rel in ("meta/info.json", "data/chunk-000/file-000.parquet", "meta/tasks.parquet"):  # FIFOs must not block
            demos = Path(_demo_variant(tmp_path / f"fifo-{rel.replace('/', '-')}", "action", lambda rows: rows))
            (demos / rel).unlink()
            os.mkfifo(demos / rel)
            r = CliRunner().invoke(root_cli, ["--home", str(tmp_path / "home"), "learn", "plates", "--demos", str(demos), *FAST_CLI],
                                   catch_exceptions=False)
            assert_one_line_error(r, Code.INVALID_VALUE, "is a FIFO (named pipe)", rel)
        assert_unchanged(reg, before)
    finally:
        reg.close()


# ------------------------------------------------------------------------------- the store trusts nothing

def _same_size_damage(data: bytes) -> list[bytes]:
    flip_first = bytes([data[0] ^ 1]) + data[1:]
    flip_last = data[:-1] + bytes([data[-1] ^ 0x80])
    zeros = bytes(len(data))
    shifted = data[1:] + data[:1]
    return [flip_first, flip_last, zeros, shifted]


def test_reimport_over_a_damaged_blob_is_refused(populated, cli, make_checkpoint, tmp_path):
    """The issue's case: same-size corruption, then good content imported again. Before, a new
    version pointed at the bad bytes (exit 0). Now: CORRUPT naming the blob, nothing committed."""
    src = tmp_path / "checkpoints" / "base.safetensors"  # the file v0 was imported from
    blob = populated.show("v0").files[0].blob
    path = Path(populated.store.path(blob))
    good = path.read_bytes()
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # read-only (root may write anyway)
    assert path.stat().st_mode & 0o222 == 0
    for damaged in _same_size_damage(good) + [good[:-1], good + b"\0"]:
        overwrite_blob(path, damaged)
        os.chmod(path, 0o444)
        before = state(populated)
        # --force: the same weights again as a second root, so the import reaches the damaged blob
        assert_one_line_error(cli("base", "import", str(src), "--force"), Code.CORRUPT, blob)
        assert state(populated) == before
    overwrite_blob(path, good)
    assert populated.verify().ok


def test_a_file_changing_while_stored_is_refused(tmp_path):
    from registry.errors import RegistryError
    from registry.store import BlobStore

    store = BlobStore(str(tmp_path / "store"))
    src = tmp_path / "moving.bin"
    src.write_bytes(b"first content")
    import registry.store as store_mod

    real = store_mod.file_digest

    def digest_then_change(path):  # the file changes between the hash and the copy
        out = real(path)
        Path(path).write_bytes(b"other content")
        return out

    store_mod.file_digest = digest_then_change
    try:
        with pytest.raises(RegistryError) as e:
            store.put_file(src)
    finally:
        store_mod.file_digest = real
    assert "changed while it was being stored" in str(e.value)
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


# ------------------------------------------------------------------------------- rollback

def test_rollback_refuses_another_lineage_unless_forced(registry, make_checkpoint, cli, private_tmp):
    """v0 -> v1 -> v2 on main; v3 learned from v0 on exp; v4 a base of its own on other."""
    reg = registry
    reg.import_base(make_checkpoint("a.safetensors", seed=0))
    reg.commit_version(make_checkpoint("b.safetensors", seed=1), parent="v0", how="learn", expected_head="v0")
    reg.commit_version(make_checkpoint("c.safetensors", seed=2), parent="v1", how="learn", expected_head="v1")
    reg.commit_version(make_checkpoint("d.safetensors", seed=3), parent="v0", how="learn", ref="exp", expected_head=None)
    reg.import_base(make_checkpoint("e.safetensors", seed=4), ref="other")
    before = state(reg)
    for target in ("v3", "v4", "exp", "other"):
        assert_one_line_error(cli("rollback", target), Code.INVALID_VALUE, "is not an ancestor of main's head v2",
                              "its ancestors v1, v0", "--force")
    assert_one_line_error(cli("rollback", "v2", "--ref", "exp"), Code.INVALID_VALUE, "its ancestors v0")
    assert_one_line_error(cli("rollback", "v0", "--ref", "other"), Code.INVALID_VALUE, "v4 has no ancestors")
    assert_unchanged(reg, before)
    assert cli("rollback", "v0").exit_code == 0  # an ancestor
    assert cli("rollback", "v2").exit_code == 0  # main pointed at v2 before: undoing a move is a rollback too
    r = cli("rollback", "v3", "--force", "-m", "adopt the exp line")
    assert r.exit_code == 0 and r.output.strip() == "main: v2 -> v3 (rollback)"
    assert reg.head("main").name == "v3"


# ------------------------------------------------------------------------------- killed runs

def test_gc_removes_only_work_folders_whose_owner_is_gone(registry, tmp_path):
    import subprocess
    import sys

    from registry.workdirs import WORK, _host_tag, _start_ticks

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    work = Path(registry.locations.home) / WORK
    with registry.work_folder("learn") as mine:  # this process's own, alive
        (mine / "w.bin").write_bytes(b"x" * 100)
        dead = work / f"{dead_pid}-0-{_host_tag()}-learn-abc123"
        reused = work / f"{os.getpid()}-{(_start_ticks(os.getpid()) or 0) + 1}-{_host_tag()}-learn-def456"  # pid reused
        elsewhere = work / f"{dead_pid}-0-00000000-learn-ghi789"  # made on another machine
        junk = work / "notes"
        for d in (dead, reused, elsewhere, junk):
            (d / "sub").mkdir(parents=True)
            (d / "sub" / "f.bin").write_bytes(b"y" * 1000)
        report = registry.gc(dry_run=True)
        expected = sorted([dead.name] + ([reused.name] if _start_ticks(os.getpid()) else []))
        assert sorted(report.work_folders) == expected and all(d.exists() for d in (dead, reused))
        report = registry.gc()
        assert sorted(report.work_folders) == expected and report.bytes_freed >= 1000 * len(expected)
        assert not dead.exists() and mine.exists() and elsewhere.exists() and junk.exists()
    assert not mine.exists()


def test_learn_finetuned_and_merge_refuse_what_the_reference_refuses(tmp_path, private_tmp):
    """`learn --finetuned` and `merge` read weights through the same parser as `base import`."""
    from click.testing import CliRunner

    from cli import cli as root_cli
    from learn_support import FAST_CLI, save_tiny_model, tiny_registry

    reg = tiny_registry(tmp_path)
    try:
        corpus = _refused_hand_cases(tmp_path)
        good = save_tiny_model(tmp_path / "good-ft", seed=1)
        before = state(reg)
        home = ["--home", str(tmp_path / "home")]
        for path in corpus:
            r = CliRunner().invoke(root_cli, [*home, "learn", "plates", "--finetuned", str(path), "--alpha", "0.5", *FAST_CLI],
                                   catch_exceptions=False)
            assert_one_line_error(r, Code.INVALID_VALUE, path.parent.name)
            out = tmp_path / "merged" / path.parent.name
            r = CliRunner().invoke(root_cli, [*home, "merge", str(good), str(path), "--alpha", "0.5", "-o", str(out), "-q"],
                                   catch_exceptions=False)
            assert_one_line_error(r, Code.INVALID_VALUE, path.parent.name)
            assert not out.exists()
        assert_unchanged(reg, before)
    finally:
        reg.close()


def test_a_lost_interrupt_still_ends_the_run(tmp_path):
    """A KeyboardInterrupt raised inside a finaliser is printed as ignored and lost; the first
    signal's deadline ends the run anyway (here 2 s instead of 60), with exit 130."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "stubborn.py"
    script.write_text(
        "import time, retain.commands.learn_cmds as lc\n"
        "lc.STOP_DEADLINE_S = 2.0\n"
        "lc._interrupt_on_sigterm()\n"
        "try:\n"  # the one interrupt may land anywhere after the handler is set, even inside print
        "    print('ready', flush=True)\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    pass  # what Python does with one raised in a finaliser\n"
        "while True:\n"
        "    time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - t0 < 30
    assert err.strip().splitlines()[-1].startswith("Interrupted: nothing was committed")
