"""Real processes: two commits racing onto one ref, and a commit killed between its blob writes
and its transaction. On SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli_argv
from registry.api import FAULT_PAUSE_ENV
from registry.errors import Code


def _store_files(registry) -> set[str]:
    store = Path(registry.locations.store_url)
    return {p.name for p in store.rglob("*") if p.is_file()}


def _spawn(registry, *args: str, pause: float | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if pause is not None:
        env[FAULT_PAUSE_ENV] = str(pause)
    return subprocess.Popen(cli_argv(registry, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_committing_onto_main_one_wins_one_conflicts(registry, make_checkpoint):
    """Both read head v0, store their blobs, then race for the ref: exactly one commit lands; the
    other exits with CONFLICT naming the new head, and leaves no trace in the database."""
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    ckpts = [make_checkpoint(f"c{i}.safetensors", seed=10 + i) for i in range(2)]
    # The pause holds each process between "read head, write blobs" and the transaction, so both
    # have read v0 before either commits: a genuine race on the ref.
    procs = [_spawn(registry, "base", "import", str(c), "--json", pause=3) for c in ckpts]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, Code.CONFLICT.value], results
    (winner_i,) = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    loser_err = results[1 - winner_i][2]
    assert "Error: CONFLICT: ref 'main' is at v1 but this commit expected v0" in loser_err
    assert "Traceback" not in loser_err
    won = json.loads(results[winner_i][1])
    assert won["name"] == "v1" and registry.head().name == "v1"
    from registry.checkpoint import open_checkpoint, weight_hash

    with open_checkpoint(ckpts[winner_i]) as ck:
        assert registry.head().weight_hash == weight_hash(ck)
    assert [v.name for v in registry.versions()] == ["v0", "v1"]
    assert [(e.old, e.new) for e in registry.log()] == [("v0", "v1"), (None, "v0")]
    assert registry.verify().ok


def test_concurrent_commits_onto_different_refs_both_land(registry, make_checkpoint):
    """No update is lost: racing commits on two refs both get distinct version numbers."""
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    procs = [_spawn(registry, "base", "import", str(make_checkpoint(f"r{i}.safetensors", seed=20 + i)), "--ref", ref, "--json",
                    pause=1.0) for i, ref in enumerate(["main", "exp"])]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0], results
    names = sorted(json.loads(out)["name"] for _, out, _ in results)
    assert names == ["v1", "v2"]
    assert {registry.head("main").name, registry.head("exp").name} == {"v1", "v2"}


def test_kill_between_blob_write_and_ref_move(registry, make_checkpoint):
    """SIGKILL a real commit after its blobs are written and before its transaction: nothing
    visible changes, verify is clean, and gc reclaims the orphan blob."""
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    before = (registry.lineage(), registry.log(None))
    files_before = _store_files(registry)
    proc = _spawn(registry, "base", "import", str(make_checkpoint("doomed.safetensors", seed=99)), pause=60)
    seen = []
    for line in proc.stderr:  # the hook prints one line once the blobs are in the store
        seen.append(line)
        if FAULT_PAUSE_ENV in line:
            break
    assert seen and FAULT_PAUSE_ENV in seen[-1], seen
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    orphans = _store_files(registry) - files_before
    assert len(orphans) == 1 and all(registry.store.exists(o) for o in orphans)
    assert (registry.lineage(), registry.log(None)) == before
    assert registry.verify().ok
    assert registry.gc().orphan_files == []  # within the grace period: could be a commit in flight
    time.sleep(0.05)
    report = registry.gc(grace_seconds=0)
    assert sorted(report.orphan_files) == sorted(orphans)
    assert _store_files(registry) == files_before
    assert registry.verify().ok and (registry.lineage(), registry.log(None)) == before


def test_processes_initialising_one_database_at_once_all_succeed(db_url, tmp_path):
    """Migrations are serialised (SQLite write lock, PostgreSQL advisory lock): the first migrates,
    the others find the schema current."""
    from conftest import ROOT

    argv = [sys.executable, str(ROOT / "cli.py"), "--home", str(tmp_path / "h"), "--db", db_url, "--store", str(tmp_path / "s"), "init"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results


def _commit_burst(args) -> list[str]:
    """One process of the burst: open the registry, wait for the others, commit `n` versions onto its own ref."""
    home, db_url, store_url, ckpts, ref, barrier = args
    from registry.api import Registry
    from registry.errors import RegistryError

    out = []
    with Registry.open(home=home, db_url=db_url, store_url=store_url) as reg:
        barrier.wait(timeout=300)
        head = None
        for ck in ckpts:
            try:
                head = reg.commit_version(ck, parent=head, how="learn" if head else "base-import", ref=ref,
                                          expected_head=head).name
                out.append(head)
            except RegistryError as e:
                out.append(f"exit {e.exit_code}: {e}")
    return out


def test_a_burst_of_16_processes_on_their_own_refs_loses_nothing(registry, make_checkpoint):
    """16 processes start together and commit 4 versions each, each onto its own ref: every
    commit lands, with distinct, gap-free numbers (no exit 5 from colliding numbers)."""
    import multiprocessing as mp

    procs, per = 16, 4
    ckpts = [[str(make_checkpoint(f"b{p}-{i}.safetensors", seed=1000 + p * per + i)) for i in range(per)] for p in range(procs)]
    loc = registry.locations
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(procs)
    with ctx.Pool(procs) as pool:
        results = pool.map(_commit_burst, [(str(loc.home), loc.db_url, loc.store_url, ckpts[p], f"r{p}", barrier)
                                           for p in range(procs)], chunksize=1)
    failures = [r for rs in results for r in rs if r.startswith("exit")]
    assert failures == [], failures
    names = [n for rs in results for n in rs]
    assert sorted(int(n[1:]) for n in names) == list(range(procs * per))
    for p, rs in enumerate(results):
        assert registry.head(f"r{p}").name == rs[-1]
        chain = [registry.resolve(n).parent for n in rs]
        assert chain == [None, *rs[:-1]]
    assert registry.verify().ok
