"""benchmarks/policy_width.py: times wider builds of the built-in policy against the shipped width."""
from __future__ import annotations

from benchmarks import policy_width  # noqa: E402


def test_parse_width_reads_config_overrides():
    assert policy_width.parse_width("vision_channels=96,d_model=192") == {"vision_channels": 96, "d_model": 192}
    assert policy_width.parse_width("language_backbone=minilm,max_words=24") == {"language_backbone": "minilm", "max_words": 24}


def test_report_times_each_width_and_projects_the_recipe(capsys):
    report = policy_width.main(["--steps", "1", "--blocks", "1", "--threads", "1", "--episodes", "1",
                                "--widths", "vision_channels=80"])
    shipped, wide = report["widths"]["shipped"], report["widths"]["vision_channels=80"]
    assert wide["parameters"] > shipped["parameters"] and shipped["over_shipped"] == 1.0
    assert wide["best_seconds_per_step"] > 0 and wide["projected_pretrain_minutes"] > 0
    assert "vision_channels=80" in capsys.readouterr().out
