"""The command line's front: --version, and options documented with their defaults."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]


def test_version_names_the_package_and_stays_torch_free():
    code = ("import sys, cli\n"
            "try:\n    cli.cli(['--version'], prog_name='retain')\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("retain 0.") and "(python 3." in out.stdout
