"""`learn` scores the same with its evaluations in worker processes as in its own process, and
`retain eval` reproduces what it recorded."""
from __future__ import annotations

import json

import pytest

from learn_support import fast_options
from retain.learn import learn


def _learn_on_the_shipped_base(root, workers: str, monkeypatch):
    from registry.api import Registry
    from retain.pretrain import shipped_base

    monkeypatch.setenv("RETAIN_EVAL_WORKERS", workers)
    base = shipped_base()
    reg = Registry.open(home=str(root / "home"), create=True)
    reg.import_base(base.weights_dir, name="shipped", config=base.config)
    res = learn(reg, "plates", fast_options(episodes=4, compare_finetuned=True))
    run = reg.learn_run_for(res.version.name)
    scores = {v: sorted((s.skill or "", s.split, s.successes, s.episodes) for s in reg.scores(v)) for v in ("v0", "v1")}
    record = (res.version.weight_hash, run.alpha, run.sweep, scores,
              [(r.skill, r.split, r.successes) for r in res.finetuned_scores])
    reg.close()
    return record


@pytest.mark.slow
def test_two_evaluation_workers_record_what_one_process_records(tmp_path, monkeypatch):
    """Every row lands on its own checkpoint, skill and split: the parent's generalist score, the
    merged backbone's and the plain finetune's differ on the shipped base, so a mix-up would show.
    Then `retain eval` with learn's seed and episode count gives back the recorded scores."""
    here = _learn_on_the_shipped_base(tmp_path / "one", "1", monkeypatch)
    there = _learn_on_the_shipped_base(tmp_path / "two", "2", monkeypatch)
    assert there == here
    rows = [r for v in here[3].values() for r in v]
    assert any(r[2] > 0 for r in rows) and any(r[2] < r[3] for r in rows)

    from click.testing import CliRunner

    from cli import cli

    out = CliRunner().invoke(cli, ["--home", str(tmp_path / "two" / "home"), "eval", "v1", "--skill", "plates",
                                   "--split", "all", "-n", "4", "--seed", str(fast_options().eval_seed), "--json"])
    assert out.exit_code == 0, out.output
    again = sorted((r["skill"] if r["split"] != "generalist" else "", r["split"], r["successes"], r["episodes"])
                   for r in json.loads(out.stdout)["scores"])
    assert again == here[3]["v1"]
