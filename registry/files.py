"""Opening files a user names without hanging or tracebacks.

A FIFO, socket or device named `model.safetensors` would block a plain `open()` forever (a FIFO
waits for a writer) or stream without end; a symlink loop raises OSError. `open_regular` opens
without blocking (O_NONBLOCK), then refuses anything that is not a regular file from the open
descriptor itself, so a file swapped in between a check and the open cannot slip through. Reads
of a regular file do not block indefinitely, so no read needs a timeout once this check passed.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from registry.errors import invalid, not_found


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading; refuses missing paths, symlink loops and non-regular files."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise not_found(f"{what} {path} does not exist") from None
    except OSError as e:
        raise unreadable(path, what, e) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise invalid(f"{what} {path} is {kind_of(mode)}, not a regular file; pass a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "file") -> bytes:
    with open_regular(path, what) as f:
        return f.read()


def check_regular(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse `path` unless it opens as a regular file (see open_regular)."""
    open_regular(path, what).close()


def unreadable(path: str | os.PathLike, what: str, e: OSError):
    if e.errno == errno.ELOOP:
        return invalid(f"{what} {path} is a symbolic link that loops (it points back at itself); point it at a real file")
    if e.errno == errno.EISDIR:
        return invalid(f"{what} {path} is a folder, not a file; pass a file")
    return invalid(f"cannot read {what} {path} ({e.strerror or e}); check that it exists and is readable")


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_in(fs, path: str, what: str = "file") -> BinaryIO:
    """`path` on fsspec filesystem `fs` opened for binary reading; on the local disk through
    open_regular, so a FIFO inside a dataset or store cannot block the read."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return open_regular(path, what)
    return fs.open(path, "rb")
