"""The errors slm raises for the user, and the exit code each maps to (one place: ``exit_code``).

Every error meant for the user derives from ``SlmError``; its message is one line. ``InputError`` is bad input
or usage (exit 2: a file, a value, a board or port that was named wrongly; nothing was changed), ``OperationError``
an operation that failed (exit 1: a device that did not answer, a write that failed). Modules keep their own
classes (``WavError``, ``LinkError``, ...) as subclasses of these two, so callers can catch either the family or
the specific case.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def one_line(message: object) -> str:
    """The message on one line: runs of whitespace (newlines included) become one space."""
    return " ".join(str(message).split())


class SlmError(Exception):
    """An error for the user; ``str()`` is one line."""

    exit_code = EXIT_FAILED

    def __init__(self, message: object = ""):
        super().__init__(one_line(message))


class InputError(SlmError, ValueError):
    """Bad input or usage: exit code 2."""

    exit_code = EXIT_USAGE


class OperationError(SlmError, RuntimeError):
    """A failed operation: exit code 1."""

    exit_code = EXIT_FAILED


class PortNotFoundError(InputError):
    """A serial port that was named does not exist (or is not a serial port)."""


def exit_code(exc: BaseException) -> int | None:
    """The exit code for an exception the CLI reports in one line, or None for one it does not know (a bug:
    shown as an internal error). Standard exceptions that carry user input problems map as SlmError's do."""
    if isinstance(exc, SlmError):
        return exc.exit_code
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return EXIT_USAGE
    if isinstance(exc, OSError):
        return EXIT_FAILED
    if isinstance(exc, ValueError):
        return EXIT_USAGE
    return None
