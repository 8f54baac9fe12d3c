"""One exception type for user mistakes, and the one map of expected failures to one line.

A `UserError` carries a one-line message meant for a person; the CLI turns it into exit code 2
with no traceback. `expected_failure` names the other failures that come from the user's files
or machine, not from our code (the system refusing a path, a full disk, too little memory, a
file nested too deeply to read, a model library refusing a file): the CLI reports those the same
way. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

#: Longest message shown: a value echoed from a user's file (a huge string, a list of a million
#: items) must not turn one line into megabytes.
MAX_MESSAGE = 1000


def one_line(message: object, limit: int = MAX_MESSAGE) -> str:
    """`message` on one line, at most about `limit` characters."""
    text = " ".join(str(message).split())
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


class UserError(Exception):
    """A mistake in what the user gave us (a path, a name, a config value), not a bug."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


#: Modules whose own exception types mean "this model file is not one we can read/run" (the
#: exception is raised by the library on the user's file, not by a misuse in our code).
_MODEL_LIBRARIES = ("onnx", "onnxruntime", "google.protobuf", "h5py", "yaml")


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def expected_failure(exc: BaseException) -> str | None:
    """The one-line message for a failure that is the user's file or machine, not a bug; None
    for anything else (which keeps its traceback)."""
    import sqlite3

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MemoryError):
        detail = f" ({one_line(exc, 200)})" if str(exc) else ""
        return f"not enough memory{detail}: the input is too large for this machine"
    if isinstance(exc, RecursionError):
        return ("the input is nested too deeply to read (a model config, graph or file deeper "
                "than Python's recursion limit)")
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        text = str(exc)
        if "full" in text:
            return (f"the disk is full ({one_line(text, 200)}): every batch stored so far is "
                    "kept; free some space and continue with --resume")
        return f"result database error: {one_line(text, 300)}"
    if isinstance(exc, OSError):
        import errno

        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return (f"the disk is full writing{where}: free some space and run again "
                    "(a campaign continues with --resume)")
        return f"cannot use{where}: {one_line(exc.strerror or exc, 300)}"
    module = type(exc).__module__ or ""
    if any(module == m or module.startswith(m + ".") for m in _MODEL_LIBRARIES):
        return f"{type(exc).__name__}: {one_line(_first_line(exc), 300)}"
    return None
