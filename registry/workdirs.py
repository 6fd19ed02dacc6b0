"""Work folders under the registry home, which `gc` removes once their owner process is gone.

`learn`, `replay` and `eval` check weights out, write finetunes and deltas: gigabytes for a large
policy. A run killed with SIGKILL cannot clean up, so its folder must be somewhere known:
HOME/work/<pid>-<start>-<host>-<kind>-<random>. The name says which process owns it (its pid and
its start time, so a reused pid is not mistaken for the owner) and on which machine (a home on a
shared disk is only judged by the machine that made the folder); `gc` removes the folders whose
owner no longer runs and reports the bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Optional

WORK = "work"
_NAME = re.compile(r"^(\d+)-(\d+)-([0-9a-f]{8})-([a-z]+)-")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _start_ticks(pid: int) -> Optional[int]:
    """The process's start time (clock ticks since boot, Linux), None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces


@contextlib.contextmanager
def work_folder(home: str | os.PathLike, kind: str) -> Iterator[Path]:
    """A fresh folder under HOME/work owned by this process, removed on the way out (also on Ctrl-C).

    Where the home cannot hold it (not writable), the system temp dir does, as before.
    """
    pid = os.getpid()
    prefix = f"{pid}-{_start_ticks(pid) or 0}-{_host_tag()}-{kind}-"
    root = Path(home) / WORK
    try:
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError:
        path = Path(tempfile.mkdtemp(prefix=f"retain-{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _owner_alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    now = _start_ticks(pid)
    return start == 0 or now is None or now == start


def abandoned(home: str | os.PathLike) -> list[Path]:
    """Work folders made on this machine whose owner process is gone; folders of other machines,
    of live processes, and anything not named like a work folder are left alone."""
    root = Path(home) / WORK
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        m = _NAME.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and m.group(3) == _host_tag() and not _owner_alive(int(m.group(1)), int(m.group(2))):
            out.append(p)
    return out


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
