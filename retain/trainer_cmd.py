"""`learn --finetune-cmd`: run the user's own trainer as the finetune.

The template is a shell command with placeholders, each filled shell-quoted:

    {parent}  the head's weights (safetensors + config.json), to finetune from
    {demos}   the dataset's path or URL
    {out}     an empty folder; the command leaves the finetuned safetensors there
    {seed}    the run's seed

`{{` and `}}` are literal braces. The command runs under `/bin/sh -c` in a process group of its
own, led by a small supervisor (`python -m retain.trainer_cmd`) that stops the whole group when
learn is interrupted, killed (even with SIGKILL: it watches its parent) or times out, so no
trainer outlives the learn that started it. Its output goes to a log whose tail is kept for the
record and for the one-line error when it fails.

Example:
    >>> check_template("python train.py --init {parent} --data {demos} --out {out} --seed {seed}")
    >>> run = run_trainer(template, parent=p, demos="data/", out=Path("ft"), seed=0, log=Path("ft.log"))
    >>> run.exit_status, run.wall_s, run.log_tail
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from registry.errors import invalid, invalid_state

PLACEHOLDERS = ("parent", "demos", "out", "seed")
REQUIRED = ("parent", "out")
TAIL_LINES = 40
TAIL_CHARS = 4000
STOP_GRACE_S = 10.0  # SIGTERM, then this long before SIGKILL: trainers get to flush and exit
WATCH_S = 0.5  # how often the supervisor checks that learn is still alive


@dataclasses.dataclass(frozen=True)
class TrainerRun:
    command: str  # the filled command line
    exit_status: int
    wall_s: float
    log_tail: str


def check_template(template: str) -> list[str]:
    """The template's placeholders; refuses unknown ones, bad braces and missing {parent} / {out}."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise invalid(f"--finetune-cmd {template!r} has unbalanced braces ({e}); write literal braces as {{{{ and }}}}") from None
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise invalid(f"--finetune-cmd uses {{{unknown[0]}}}, which learn does not fill; use "
                      f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    missing = [p for p in REQUIRED if p not in fields]
    if missing:
        raise invalid(f"--finetune-cmd must use {{{missing[0]}}} (learn passes the head's weights as {{parent}} and "
                      "takes the finetuned safetensors from {out})")
    return fields


def fill(template: str, *, parent: Path, demos: Optional[str], out: Path, seed: int) -> str:
    fields = check_template(template)
    if "demos" in fields and demos is None:
        raise invalid("--finetune-cmd uses {demos} but learn has no dataset for it; pass --demos PATH_OR_URL")
    values = {"parent": str(parent), "demos": demos or "", "out": str(out), "seed": str(seed)}
    return template.format(**{k: shlex.quote(v) for k, v in values.items()})


def log_tail(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4 * TAIL_CHARS))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]


def _one_line(tail: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()][-n:]
    return " | ".join(lines) if lines else "(no output)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the command's whole process group, SIGKILL what is left after the grace period."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_trainer(template: str, *, parent: Path, demos: Optional[str], out: Path, seed: int, log: Path,
                timeout_s: Optional[float] = None) -> TrainerRun:
    """Run the filled command to completion; refuse a failure or an empty {out} in one line.

    Raises INVALID_STATE when the command fails, times out or leaves no safetensors in `out`
    (the message ends with the log's last lines); KeyboardInterrupt and every other exception
    stop the command's process group first.
    """
    command = fill(template, parent=parent, demos=demos, out=out, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "retain.trainer_cmd", str(os.getpid()), command],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise invalid_state(f"--finetune-cmd ran past its {timeout_s:g} s timeout and was stopped; its log ends: "
                                f"{_one_line(log_tail(log))}. Nothing was committed") from None
        except BaseException:
            _stop(proc)
            raise
    wall = round(time.perf_counter() - t0, 3)
    tail = log_tail(log)
    if rc != 0:
        raise invalid_state(f"--finetune-cmd exited with status {rc} after {wall:.1f} s; its log ends: {_one_line(tail)}. "
                            "Fix the command (try it by hand on an exported version); nothing was committed")
    if not any(out.glob("*.safetensors")):
        raise invalid_state(f"--finetune-cmd exited 0 but left no .safetensors in {{out}} ({out}); write the finetuned "
                            f"weights there, not in a subfolder. Its log ends: {_one_line(tail)}. Nothing was committed")
    return TrainerRun(command, rc, wall, tail)


def _supervise(learn_pid: int, command: str) -> int:
    """Lead the command's process group: run it, and stop the group if learn goes away or signals us."""
    child = subprocess.Popen(["/bin/sh", "-c", command])

    def stop_group(signum=None, frame=None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # killpg reaches this process too
        os.killpg(os.getpgrp(), signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop_group)
    signal.signal(signal.SIGINT, stop_group)
    while True:
        try:
            rc = child.wait(timeout=WATCH_S)
            return rc if rc >= 0 else 128 - rc
        except subprocess.TimeoutExpired:
            if os.getppid() != learn_pid:  # learn died (even by SIGKILL): nobody will use the result
                stop_group()


if __name__ == "__main__":
    sys.exit(_supervise(int(sys.argv[1]), sys.argv[2]))
