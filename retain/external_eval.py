"""Score a checkpoint with the user's own evaluator: `--eval-cmd 'python my_eval.py {checkpoint}'`.

Teams whose policy is not built in (openpi, LeRobot, ...) still get alpha selection and lineage:
`learn` writes each candidate merge to a folder, runs the command with `{checkpoint}` replaced by
that folder, and reads the LAST line of standard output that is a JSON object. Accepted forms:

    {"successes": 37, "episodes": 50}
    {"success_rate": 0.74, "episodes": 50}     # successes = round(rate * episodes)
    {"success_rate": 0.74}                      # a rate alone (no counts to record)

("rate" and "success" are accepted for "success_rate".) The command is split like a shell
line (shlex) but run without a shell, so a path with spaces stays one argument.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
from typing import Any

from registry.errors import invalid, unavailable

PLACEHOLDER = "{checkpoint}"
_RATE_KEYS = ("success_rate", "rate", "success")


@dataclasses.dataclass(frozen=True)
class ExternalResult:
    rate: float
    successes: int | None
    episodes: int | None
    raw: dict[str, Any]


def command_for(template: str, checkpoint: str | os.PathLike) -> list[str]:
    """The argument list for one checkpoint; refuses templates without `{checkpoint}`."""
    try:
        parts = shlex.split(template or "")
    except ValueError as e:
        raise invalid(f"--eval-cmd {template!r} does not parse ({e}); quote it like a shell command") from None
    if not parts:
        raise invalid("--eval-cmd is empty; give a command such as 'python eval.py {checkpoint}'")
    if not any(PLACEHOLDER in p for p in parts):
        raise invalid(f"--eval-cmd {template!r} has no {PLACEHOLDER} placeholder; add it where the checkpoint path goes")
    return [p.replace(PLACEHOLDER, str(checkpoint)) for p in parts]


def run_eval_cmd(template: str, checkpoint: str | os.PathLike, timeout: float | None = None) -> ExternalResult:
    """Run the evaluator on `checkpoint` and parse its JSON verdict.

    Raises RegistryError with one line when the command cannot start, exits non-zero, times
    out, or prints no usable JSON.
    """
    argv = command_for(template, checkpoint)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise unavailable(f"--eval-cmd could not start: {argv[0]!r} is not an executable on PATH; check the command") from None
    except PermissionError:
        raise unavailable(f"--eval-cmd could not start: {argv[0]!r} is not executable; check the command") from None
    except subprocess.TimeoutExpired:
        raise unavailable(f"--eval-cmd timed out after {timeout:g} s on {checkpoint}; make the evaluator faster or raise the limit") from None
    if proc.returncode != 0:
        last = _last_line(proc.stderr) or _last_line(proc.stdout) or "no output"
        raise invalid(f"--eval-cmd failed with exit status {proc.returncode} on {checkpoint}: {last}")
    return parse_result(proc.stdout, template)


def parse_result(stdout: str, template: str = "--eval-cmd") -> ExternalResult:
    """The verdict in the last JSON-object line of `stdout`."""
    obj = None
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(obj, dict):
        raise invalid(
            f"--eval-cmd printed no JSON result; make {template!r} print a line like "
            '{"successes": 37, "episodes": 50} or {"success_rate": 0.74}'
        )
    episodes = _int_or_none(obj.get("episodes"), "episodes")
    successes = _int_or_none(obj.get("successes"), "successes")
    rate_key = next((k for k in _RATE_KEYS if k in obj), None)
    if successes is not None:
        if episodes is None or episodes <= 0 or not 0 <= successes <= episodes:
            raise invalid(f"--eval-cmd printed successes={successes}, episodes={episodes}; need 0 <= successes <= episodes and episodes > 0")
        return ExternalResult(successes / episodes, successes, episodes, obj)
    if rate_key is None:
        raise invalid(f"--eval-cmd printed JSON without a result: {json.dumps(obj)[:120]}; include \"successes\"+\"episodes\" or \"success_rate\"")
    rate = obj[rate_key]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise invalid(f"--eval-cmd printed {rate_key}={rate!r}; a success rate must be a number in [0, 1]")
    if episodes is not None and episodes > 0:
        return ExternalResult(float(rate), round(float(rate) * episodes), episodes, obj)
    return ExternalResult(float(rate), None, None, obj)


def _int_or_none(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or float(value) != int(value)):
        raise invalid(f"--eval-cmd printed {key}={value!r}; it must be a whole number")
    return int(value)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
