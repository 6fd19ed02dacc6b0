"""The user's evaluator run as a real subprocess (python -c scripts stand in for openpi/LeRobot evals)."""
from __future__ import annotations

import shlex
import sys

import pytest

from registry.errors import RegistryError
from retain.external_eval import command_for, parse_result, run_eval_cmd

PY = shlex.quote(sys.executable)


def script(tmp_path, body: str) -> str:
    """A template running `body` as a Python script that gets the checkpoint as argv[1]."""
    path = tmp_path / "evaluator.py"
    path.write_text(body)
    return f"{PY} {shlex.quote(str(path))} {{checkpoint}}"


def test_counts_are_parsed_from_the_last_json_line(tmp_path):
    ckpt = tmp_path / "my ckpt"  # a space stays one argument
    ckpt.mkdir()
    tpl = script(
        tmp_path,
        "import sys, json, os\n"
        "print('loading', sys.argv[1])\n"
        "print(json.dumps({'successes': 0, 'episodes': 1}))\n"
        "assert os.path.isdir(sys.argv[1])\n"
        "print(json.dumps({'successes': 7, 'episodes': 20}))\n",
    )
    res = run_eval_cmd(tpl, ckpt)
    assert (res.successes, res.episodes) == (7, 20)
    assert res.rate == pytest.approx(0.35)


def test_rate_with_and_without_episodes(tmp_path):
    assert parse_result('{"success_rate": 0.5, "episodes": 10}').successes == 5
    alone = parse_result('log\n{"rate": 0.25}\n')
    assert alone.rate == 0.25 and alone.successes is None and alone.episodes is None


def test_failing_command_gives_one_line_with_its_last_words(tmp_path):
    tpl = script(tmp_path, "import sys\nsys.stderr.write('CUDA out of memory\\n')\nsys.exit(3)\n")
    with pytest.raises(RegistryError) as e:
        run_eval_cmd(tpl, tmp_path)
    msg = str(e.value)
    assert "exit status 3" in msg and "CUDA out of memory" in msg and "\n" not in msg


def test_no_json_is_refused(tmp_path):
    tpl = script(tmp_path, "print('success: 80%')\n")
    with pytest.raises(RegistryError, match="printed no JSON result"):
        run_eval_cmd(tpl, tmp_path)


@pytest.mark.parametrize(
    "out, fragment",
    [
        ('{"successes": 5}', "episodes"),
        ('{"successes": 9, "episodes": 5}', "successes <= episodes"),
        ('{"success_rate": 1.5}', "[0, 1]"),
        ('{"success_rate": "high"}', "[0, 1]"),
        ('{"episodes": 5}', "without a result"),
        ('{"successes": 2.5, "episodes": 5}', "whole number"),
        ('{"successes": NaN, "episodes": 5}', "whole number"),
        ('{"successes": 2, "episodes": Infinity}', "whole number"),
        ('{"success_rate": NaN}', "[0, 1]"),
    ],
)
def test_malformed_results_are_refused(out, fragment):
    with pytest.raises(RegistryError) as e:
        parse_result(out)
    assert fragment in str(e.value)


def test_templates_need_the_placeholder_and_an_executable(tmp_path):
    with pytest.raises(RegistryError, match="placeholder"):
        command_for("python eval.py", tmp_path)
    with pytest.raises(RegistryError, match="not an executable"):
        run_eval_cmd("no-such-evaluator-xyz {checkpoint}", tmp_path)
    with pytest.raises(RegistryError, match="does not parse"):
        command_for("python 'unclosed {checkpoint}", tmp_path)
