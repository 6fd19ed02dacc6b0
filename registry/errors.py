"""One domain exception with a small fixed set of codes.

The CLI maps each code to an exit status and prints the message as one line, so a message
must name the problem and the fix on its own.
"""
from __future__ import annotations

import enum


class Code(enum.Enum):
    # 1 is Python's own failure and 2 click's usage error (an unknown option, a missing argument),
    # so "not found" has a number of its own.
    NOT_FOUND = 9
    ALREADY_EXISTS = 3
    INVALID_VALUE = 4
    INVALID_STATE = 5
    CONFLICT = 6
    CORRUPT = 7
    UNAVAILABLE = 8


class RegistryError(Exception):
    """An error a user can act on. `code` picks the exit status; `str(err)` is the one-line message."""

    def __init__(self, message: str, code: Code = Code.INVALID_VALUE):
        super().__init__(message)
        self.code = code

    @property
    def exit_code(self) -> int:
        return self.code.value


def not_found(message: str) -> RegistryError:
    return RegistryError(message, Code.NOT_FOUND)


def invalid(message: str) -> RegistryError:
    return RegistryError(message, Code.INVALID_VALUE)


def conflict(message: str) -> RegistryError:
    return RegistryError(message, Code.CONFLICT)


def corrupt(message: str) -> RegistryError:
    return RegistryError(message, Code.CORRUPT)


def unavailable(message: str) -> RegistryError:
    return RegistryError(message, Code.UNAVAILABLE)


def invalid_state(message: str) -> RegistryError:
    return RegistryError(message, Code.INVALID_STATE)


def already_exists(message: str) -> RegistryError:
    return RegistryError(message, Code.ALREADY_EXISTS)


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type's name if it has none): what a one-line message quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
