"""The README stays a short, true guide: its size, its install commands, its links, its tables."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def test_readme_fits_in_a_few_screens():
    assert len(README) < 15_000


def test_install_commands_pin_torch_to_the_cpu_index_and_ci_runs_the_same():
    installs = [line.strip() for line in README.splitlines() if "pip install" in line and "-e " in line]
    assert len(installs) >= 2
    for line in installs:
        assert "torch==2.13.0" in line and CPU_INDEX in line, line
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"python -m pip install torch==2.13.0 {CPU_INDEX} -e '.[test]'" in ci
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()


def test_linked_docs_exist():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert links
    for link in links:
        if "://" not in link:
            assert (ROOT / link).is_file(), link


def test_cli_reference_names_every_command_and_only_real_ones():
    import cli

    table = re.findall(r"^\| `([a-z]+)", README, flags=re.M)
    assert set(table) == set(cli.COMMANDS), set(table) ^ set(cli.COMMANDS)


def test_exit_code_list_matches_the_error_codes_and_the_cli():
    from click.testing import CliRunner

    import cli
    from registry.errors import Code

    sentence = " ".join(README.split("exit code per kind:")[1].split(";")[0].split())
    listed = {int(n): what for n, what in re.findall(r"(\d+) ([a-z ]+?)(?:,|\.|$)", sentence)}
    assert {code.value: code.name for code in Code} == {n: w.replace(" ", "_").upper() for n, w in listed.items()}
    assert "2 is a usage error" in " ".join(README.split())
    runner = CliRunner()
    assert runner.invoke(cli.cli, ["lineage", "--no-such-option"]).exit_code == 2
    assert runner.invoke(cli.cli, ["--home", "/nonexistent/retain-home", "lineage"]).exit_code == Code.NOT_FOUND.value != 2
