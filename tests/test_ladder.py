"""benchmarks/ladder.py's report: the fixed metric computed from testbed.json cells."""
from __future__ import annotations

import json
from pathlib import Path


from benchmarks import ladder  # noqa: E402

L05 = "vision=1,language=0.5,action=1"


def _row(seed: int, alpha, ood: str, para: str, gen: int) -> dict:
    n = len(ood)
    return {"seed": seed, "skill": "plates", "alpha": alpha, "id": [n, n], "ood:position": [ood.count("1"), n],
            "ood:paraphrase": [para.count("1"), n], "generalist": [gen, 10],
            "outcomes": {"id": "1" * n, "ood:position": ood, "ood:paraphrase": para}}


def _cell(path: Path, seed: int, merge_ood: str) -> None:
    path.mkdir(parents=True)
    results = [_row(seed, 0.0, "0000", "0000", 8), _row(seed, 0.5, "0011", "0000", 6),
               _row(seed, L05, merge_ood, "0001", 4), _row(seed, 1.0, "0001", "0011", 2)]
    (path / "testbed.json").write_text(json.dumps({"results": results}))


def test_report_reads_the_gain_of_the_best_merge(tmp_path, capsys):
    for seed in (0, 1):
        _cell(tmp_path / "b" / "task" / "plates" / f"seed{seed}", seed, "0111")
    (tmp_path / "b" / "strength.json").write_text(json.dumps({"put-in-box": {"generalist": 40.0}}))
    assert ladder.main(["report", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "ladder.json").read_text())
    assert row["best_merge"] == "v1/l0.5/a1" and row["modality"] == "language"
    assert row["finetune_ood"] == 0.25 and row["merge_ood"] == 0.75 and row["gain"] == 0.5
    assert row["z_vs_finetune"] == 2.0  # 4 episodes only the merge solves, none only the finetune
    assert row["kept"] == 0.5 and row["strength"] == 0.4
    assert (row["paraphrase_finetune"], row["paraphrase_merge"]) == (0.5, 0.25)  # its own column, not pooled
    assert (tmp_path / "ladder.png").stat().st_size > 0
    assert "| b | 40.0 | task | plates | 0,1 |" in capsys.readouterr().out


def test_report_shows_each_seeds_finetune_id_beside_the_pooled_one(tmp_path, capsys):
    _cell(tmp_path / "b" / "task" / "plates" / "seed0", 0, "0111")
    _cell(tmp_path / "b" / "task" / "plates" / "seed1", 1, "0111")
    failed = tmp_path / "b" / "task" / "plates" / "seed1" / "testbed.json"
    saved = json.loads(failed.read_text())
    saved["results"][-1]["id"] = [1, 4]  # seed 1's finetune learned little of the skill
    failed.write_text(json.dumps(saved))
    (tmp_path / "b" / "strength.json").write_text(json.dumps({"put-in-box": {"generalist": 40.0}}))
    assert ladder.main(["report", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "ladder.json").read_text())
    assert row["finetune_id"] == 5 / 8 and row["finetune_id_by_seed"] == {"0": 1.0, "1": 0.25}
    assert "| 0,1 | 62.5 (100 / 25) |" in capsys.readouterr().out


def test_a_base_at_zero_has_no_share_kept_and_the_json_stays_json(tmp_path, capsys):
    _cell(tmp_path / "b" / "task" / "plates" / "seed0", 0, "0111")
    cell = tmp_path / "b" / "task" / "plates" / "seed0" / "testbed.json"
    saved = json.loads(cell.read_text())
    saved["results"][0]["generalist"] = [0, 10]  # alpha 0: the base solves none of the suite
    cell.write_text(json.dumps(saved))
    (tmp_path / "b" / "strength.json").write_text(json.dumps({"put-in-box": {"generalist": 0.0}}))
    assert ladder.main(["report", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "ladder.json").read_text()
    assert "NaN" not in text and json.loads(text)[0]["kept"] is None
    assert "| +50.0 | 1.41 | - |" in capsys.readouterr().out


def test_report_tells_a_rung_with_a_pretrained_language_backbone_apart(tmp_path):
    for base, strength in (("b", 40.0), ("m", 45.0)):
        _cell(tmp_path / base / "task" / "plates" / "seed0", 0, "0111")
        (tmp_path / base / "strength.json").write_text(json.dumps({"put-in-box": {"generalist": strength}}))
    recipe = {"recipe": {"policy_config": {"language_backbone": "minilm", "max_words": 24}}}
    (tmp_path / "m" / "recipe.json").write_text(json.dumps(recipe))
    assert ladder.main(["report", "--out", str(tmp_path)]) == 0
    rows = {r["base"]: r["language_backbone"] for r in json.loads((tmp_path / "ladder.json").read_text())}
    assert rows == {"b": "hashed", "m": "minilm"}
    assert (tmp_path / "ladder.png").stat().st_size > 0


def test_a_base_without_weights_is_refused(tmp_path):
    try:
        ladder.main(["run", "--base", f"x={tmp_path}", "--out", str(tmp_path / "o")])
    except SystemExit as e:
        assert "weights does not exist" in str(e)
    else:
        raise AssertionError("a base folder without weights/ was accepted")


def test_ladder_base_writes_a_rung_the_ladder_reads_and_resumes_its_run(tmp_path):
    from benchmarks import ladder_base
    from registry.checkpoint import open_checkpoint, weight_hash

    tiny = ["--preset", "tiny", "--set", "steps=6", "--set", "episodes=4", "--set", "batch_size=4"]
    assert ladder_base.main(["--out", str(tmp_path / "a"), *tiny]) == 0
    rung = tmp_path / "a"
    assert ladder._bases([f"a={rung}"]) == {"a": str(rung)}
    recorded = json.loads((rung / "recipe.json").read_text())
    assert recorded["recipe"]["steps"] == 6 and recorded["cost"]["frames"] > 0
    # a run folder found again is continued, not restarted: a finished one hands back its weights
    (tmp_path / "b.run").symlink_to(tmp_path / "a.run")
    assert ladder_base.main(["--out", str(tmp_path / "b"), *tiny]) == 0
    assert weight_hash(open_checkpoint(rung / "weights")) == weight_hash(open_checkpoint(tmp_path / "b" / "weights"))


def test_report_leaves_out_a_cell_that_has_not_scored_every_alpha(tmp_path, capsys):
    _cell(tmp_path / "b" / "task" / "plates" / "seed0", 0, "0111")
    running = tmp_path / "b" / "task" / "plates" / "seed1"
    running.mkdir(parents=True)  # rewritten after each alpha: so far only the base is scored
    (running / "testbed.json").write_text(json.dumps({"args": {"alphas": [0.0, 0.5, 1.0]}, "results": [_row(1, 0.0, "0000", "0000", 8)]}))
    (tmp_path / "b" / "strength.json").write_text(json.dumps({"put-in-box": {"generalist": 40.0}}))
    assert ladder.main(["report", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "ladder.json").read_text())
    assert row["seeds"] == [0] and row["gain"] == 0.5
    assert "left out" in capsys.readouterr().err


def test_a_shipped_base_is_named_by_shipped_or_shipped_colon_name():
    import argparse

    from benchmarks.base_args import resolve_base, shipped_name
    from retain.pretrain import shipped_base

    assert [shipped_name(b) for b in ("shipped", "shipped:clutter", "/runs/r4k")] == ["default", "clutter", None]
    assert ladder._base_args("shipped:clutter") == ["--base", "shipped:clutter"]
    weights, _, config = resolve_base(argparse.Namespace(base="shipped:clutter", base_config=None))
    assert weights == shipped_base("clutter").weights_dir and config == shipped_base("clutter").config["policy_config"]
