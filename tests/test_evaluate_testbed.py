"""The testbed report's arithmetic (benchmarks/testbed.py): pooling, the verdict, paired counts."""
from __future__ import annotations

import sys
from pathlib import Path


from benchmarks import testbed  # noqa: E402

FAMS = ["ood:position", "ood:object"]


def _row(seed, alpha, idk, oods, gen):
    row = {"seed": seed, "skill": "plates", "alpha": alpha, "id": [idk, 10], "generalist": [gen, 10], "outcomes": {}}
    for fam, k in zip(FAMS, oods):
        row[fam] = [k, 10]
        row["outcomes"][fam] = "1" * k + "0" * (10 - k)
    return row


def test_inverted_u_is_detected_and_paired_counts_add_up():
    alphas = [0.0, 0.5, 1.0]
    rows = [_row(0, 0.0, 0, [1, 1], 9), _row(0, 0.5, 6, [5, 4], 8), _row(0, 1.0, 9, [2, 1], 3)]
    summary = testbed.summarise(rows, ["plates"], alphas, ["id", *FAMS])
    assert summary["plates"]["0.5"]["ood"] == 0.45 and summary["plates"]["1.0"]["id"] == 0.9
    v = testbed.check(summary, ["plates"], alphas, FAMS)["plates"]
    assert v["base_near_zero"] and v["ft_id_at_least_0.7"] and v["ft_ood_gap_at_least_0.25"]
    assert v["ft_generalist_drops"] and v["best_mid_alpha"] == 0.5 and v["inverted_u_on_ood"]
    assert v["merge_keeps_generalist"] and v["inverted_u_every_seed"]
    p = testbed.paired(rows, "plates", 0.5, alphas, FAMS)
    assert p["vs_alpha_1"] == {"mid_only": 6, "end_only": 0, "z": round(6 / 6**0.5, 2)}


def test_monotone_ood_is_not_an_inverted_u():
    alphas = [0.0, 0.5, 1.0]
    rows = [_row(0, 0.0, 0, [0, 0], 9), _row(0, 0.5, 5, [1, 1], 8), _row(0, 1.0, 9, [3, 3], 3)]
    summary = testbed.summarise(rows, ["plates"], alphas, ["id", *FAMS])
    assert not testbed.check(summary, ["plates"], alphas, FAMS)["plates"]["inverted_u_on_ood"]


def _run_tiny(tmp_path: Path, *options: str) -> tuple[Path, dict]:
    """The whole script on a tiny base, one seed, plates, a couple of episodes; (out dir, its JSON)."""
    import json

    from learn_support import TINY, save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    testbed.main(["--base", str(base), "--base-config", str(cfg), "--seeds", "0", "--skills", "plates", "--demos", "2",
                  "--episodes", "2", "--gen-episodes", "2", "--steps", "2", "--batch", "4",
                  "--families", "ood:position", "--out", str(out), *options])
    return out, json.loads((out / "testbed.json").read_text())


def test_the_testbed_runs_end_to_end_with_co_finetuning(tmp_path, capsys):
    out, saved = _run_tiny(tmp_path, "--alphas", "0", "1", "--mix", "0.5", "--mix-episodes", "2")
    assert "co-ft: 50% of every finetuning batch from" in capsys.readouterr().out
    assert saved["args"]["mix"] == 0.5
    assert [(r["alpha"], r["id"][1], r["ood:position"][1], r["generalist"][1]) for r in saved["results"]] == [
        (0.0, 2, 2, 2), (1.0, 2, 2, 2)]
    assert (out / "testbed.png").stat().st_size > 0 and not (out / "work").exists()


def test_a_per_modality_alpha_is_merged_reported_and_compared_as_a_middle_alpha(tmp_path, capsys):
    _, saved = _run_tiny(tmp_path, "--alphas", "0", "vision=0.5,language=0.25,action=1", "1")
    assert "v0.5/l0.25/a1" in capsys.readouterr().out
    assert [r["alpha"] for r in saved["results"]] == [0.0, "action=1,language=0.25,vision=0.5", 1.0]
    assert saved["verdict"]["plates"]["best_mid_alpha"] == "action=1,language=0.25,vision=0.5"


def test_alphas_that_do_not_run_from_base_to_finetune_or_do_not_parse_are_refused_in_one_line(capsys):
    import pytest

    for alphas, says in ((["0.5", "1"], "must start with 0"), (["0", "vision=0.5", "1"], "missing language, action")):
        with pytest.raises(SystemExit) as e:
            testbed.main(["--alphas", *alphas])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err


def test_a_missing_base_or_a_broken_base_config_is_one_line_and_a_non_zero_exit(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "base").mkdir()
    (tmp_path / "cfg.json").write_text("{not json")
    cases = ((["--base", str(tmp_path / "nope")], "does not exist"),
             (["--base", str(tmp_path / "base"), "--base-config", str(tmp_path / "cfg.json")], "is not JSON"),
             (["--base", str(tmp_path / "base"), "--base-config", str(tmp_path / "none.json")], "cannot read --base-config"),
             (["--mix", "1.5"], "must be in [0, 1)"))
    for options, says in cases:
        r = subprocess.run([sys.executable, "-m", "benchmarks.testbed", *options, "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=120, cwd=root)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (options, r.stderr)
        assert says in r.stderr.strip().splitlines()[-1]  # argparse puts its usage above the one line


def _saved_run(folder: Path, rows: list[dict], **args) -> Path:
    import json

    folder.mkdir(parents=True)
    run_args = {"skills": ["plates"], "alphas": [0.0, 0.5, 1.0], "steps": 300, "lr": 5e-4, **args}
    (folder / "testbed.json").write_text(json.dumps({"args": run_args, "results": rows, "timings_s": {"finetune": 1.0}}))
    return folder


def test_runs_of_one_sweep_pool_into_one_report(tmp_path, capsys):
    import json

    a = _saved_run(tmp_path / "s0", [_row(0, 0.0, 0, [1, 1], 9), _row(0, 0.5, 6, [5, 4], 8), _row(0, 1.0, 9, [2, 1], 3)])
    b = _saved_run(tmp_path / "s1", [_row(1, 0.0, 0, [3, 1], 7), _row(1, 0.5, 4, [5, 6], 6), _row(1, 1.0, 7, [4, 3], 1)])
    assert testbed.main(["--pool", str(a), str(b), "--out", str(tmp_path / "pooled")]) == 0
    saved = json.loads((tmp_path / "pooled" / "testbed.json").read_text())
    assert saved["seeds"] == {"plates": [0, 1]} and saved["timings_s"] == {"finetune": 2.0}
    assert saved["summary"]["plates"]["0.5"]["id"] == 0.5 and saved["summary"]["plates"]["0.5"]["ood"] == 0.5
    assert saved["verdict"]["plates"]["paired_ood"]["vs_alpha_1"]["mid_only"] == (5 - 2) + (4 - 1) + (5 - 4) + (6 - 3)
    assert "plates" in capsys.readouterr().out


def test_a_report_saved_with_modality_ordered_alpha_text_pools_with_one_in_the_canonical_text(tmp_path, capsys):
    import json

    old, new = "vision=1,language=0.5,action=1", "action=1,language=0.5,vision=1"
    a = _saved_run(tmp_path / "s0", [_row(0, 0.0, 0, [1, 1], 9), _row(0, old, 6, [5, 4], 8), _row(0, 1.0, 9, [2, 1], 3)],
                   alphas=[0.0, old, 1.0])
    b = _saved_run(tmp_path / "s1", [_row(1, 0.0, 0, [3, 1], 7), _row(1, new, 4, [5, 6], 6), _row(1, 1.0, 7, [4, 3], 1)],
                   alphas=[0.0, new, 1.0])
    assert testbed.main(["--pool", str(a), str(b), "--out", str(tmp_path / "pooled")]) == 0
    saved = json.loads((tmp_path / "pooled" / "testbed.json").read_text())
    assert saved["seeds"] == {"plates": [0, 1]} and saved["summary"]["plates"][new]["id"] == 0.5
    assert "v1/l0.5/a1" in capsys.readouterr().out


def test_pooling_refuses_a_seed_twice_another_sweep_or_a_folder_without_a_run(tmp_path):
    import pytest

    from registry.errors import RegistryError

    rows = [_row(0, 0.0, 0, [1, 1], 9), _row(0, 0.5, 6, [5, 4], 8), _row(0, 1.0, 9, [2, 1], 3)]
    a = _saved_run(tmp_path / "a", rows)
    twice = _saved_run(tmp_path / "again", rows)
    longer = _saved_run(tmp_path / "longer", [dict(r, seed=1) for r in rows], steps=1000)
    out = str(tmp_path / "pooled")
    for dirs, says in (([a, twice], "seed 0 of plates is in both"), ([a, longer], "its steps differ"),
                       ([a, tmp_path / "nothing"], "no readable testbed.json there")):
        with pytest.raises(RegistryError, match=says):
            testbed.main(["--pool", *map(str, dirs), "--out", out])
    assert not (tmp_path / "pooled").exists()
    before = (a / "testbed.json").read_text()
    with pytest.raises(RegistryError, match="is one of the --pool folders"):
        testbed.main(["--pool", str(a), str(longer), "--out", str(a)])
    assert (a / "testbed.json").read_text() == before
