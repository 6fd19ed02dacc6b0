"""benchmarks/device_check.sh's option handling (the checks themselves need a GPU machine)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_option_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", "benchmarks/device_check.sh", "--throughput-only", "--bogus"], cwd=ROOT,
                       env={"OUT": str(out), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout.strip() == "Error: unknown option --bogus (use --cpu-smoke and/or --throughput-only)"
    assert not out.exists()
