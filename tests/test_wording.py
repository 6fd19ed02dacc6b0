"""Commands mean what they say: errors name only flags that exist, say the value the user gave,
and every option is checked before any work starts."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import cli
from learn_support import FAST_CLI, fast_options, registry_state, tiny_registry
from registry.errors import RegistryError


@pytest.fixture
def home(tmp_path):
    reg = tiny_registry(tmp_path)
    yield reg, str(tmp_path / "home")
    reg.close()


def one_error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code not in (0, 1) and len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


@pytest.mark.parametrize("command", [["learn", "plates"], ["replay", "plates"]])
@pytest.mark.parametrize("alpha, says", [("1.5", "alpha 1.5 is outside [0, 1]"), ("-0.5", "alpha -0.5 is outside [0, 1]"),
                                         ("vision=1,language=1.5,action=1", "alpha language=1.5 is outside")])
def test_out_of_range_alpha_names_the_value_and_no_flag_the_command_lacks(home, command, alpha, says):
    reg, h = home
    before = registry_state(reg)
    extra = FAST_CLI if command[0] == "learn" else ["-q"]
    line = one_error_line(CliRunner().invoke(cli, ["--home", h, *command, "--alpha", alpha, *extra]))
    assert says in line and "vision=-0.5" not in line
    assert "--extrapolate" not in line  # neither learn nor replay has it
    assert registry_state(reg) == before


def test_merge_still_offers_extrapolate_which_it_has(tmp_path):
    from registry.checkpoint import save_tensors

    for name in ("pre", "ft"):
        save_tensors(tmp_path / f"{name}.safetensors", {"vision.w": ("F32", (1,), b"\0\0\0\0")})
    r = CliRunner().invoke(cli, ["merge", str(tmp_path / "pre.safetensors"), str(tmp_path / "ft.safetensors"),
                                 "--alpha", "-0.5", "-o", str(tmp_path / "out")])
    line = one_error_line(r)
    assert "alpha -0.5 is outside [0, 1]; pass --extrapolate" in line


def test_batch_size_zero_talks_about_the_batch_size(home):
    _, h = home
    line = one_error_line(CliRunner().invoke(cli, ["--home", h, "learn", "plates", *FAST_CLI, "--batch-size", "0"]))
    assert "--batch-size must be at least 1, got 0" in line and "nproc" not in line


def test_a_bad_lr_scale_is_refused_before_any_work(home):
    from retain.learn import learn

    reg, _ = home
    stages: list[str] = []
    with pytest.raises(RegistryError) as e:
        learn(reg, "plates", fast_options(lr_scale="foo=0.1"), say=stages.append)
    assert "starts no parameter name" in str(e.value)
    assert stages == []  # no demos collected, nothing checked out


def test_learn_help_shows_the_defaults():
    out = CliRunner().invoke(cli, ["learn", "--help"], terminal_width=200).output
    from retain.learn import LearnOptions

    d = LearnOptions()
    for option, value in (("--steps", d.finetune.steps), ("--lr", d.finetune.lr), ("--batch-size", d.finetune.batch_size),
                          ("--episodes", d.episodes)):
        line = next(ln for ln in out.splitlines() if option + " " in ln)
        assert f"(default {value:g})" in line, line


def test_no_compare_announces_no_finetune_column(home):
    _, h = home
    r = CliRunner().invoke(cli, ["--home", h, "learn", "plates", *FAST_CLI, "--alpha", "0.5"])
    assert r.exit_code == 0, r.output
    header = next(ln for ln in r.output.splitlines() if ln.startswith("scores: "))
    assert "finetune" not in header
    table_head = next(ln for ln in r.output.splitlines() if ln.strip().startswith("skill split"))
    assert table_head.split() == ["skill", "split", "parent", "v0", "merged", "v1"]


def test_eval_help_says_what_the_seed_pairs():
    out = " ".join(CliRunner().invoke(cli, ["eval", "--help"]).output.split())
    assert "the same seed and -n give the same scenes" in out and "not a prefix" in out
