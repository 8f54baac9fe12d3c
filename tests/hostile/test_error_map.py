"""The one place that maps expected failures to one line and exit 2 keeps real bugs visible:
an unexpected exception escapes `main` with its traceback (exit 1 from the console script)."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from classes_tool import commands
from classes_tool.cli import main
from classes_tool.errors import UserError, expected_failure


@pytest.mark.parametrize("exc, expect", [
    (UserError("x" * 5000), "more characters"),
    (MemoryError("Unable to allocate 3.64 TiB"), "not enough memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (sqlite3.OperationalError("database or disk is full"), "--resume"),
    (sqlite3.DatabaseError("file is not a database"), "database"),
    (OSError(errno.ENOSPC, "No space left on device", "out.h5"), "disk is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "cannot use /root/x"),
])
def test_expected_failures_are_one_line(exc, expect):
    message = expected_failure(exc)
    assert message is not None and "\n" not in message and expect in message
    assert len(message) < 1200


@pytest.mark.parametrize("exc", [KeyError("bug"), TypeError("bug"), ValueError("bug"),
                                 AttributeError("bug"), sqlite3.ProgrammingError("bug"),
                                 sqlite3.IntegrityError("bug")])
def test_bugs_are_not_mapped(exc):
    assert expected_failure(exc) is None


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(args):
        raise KeyError("a bug in our code")

    monkeypatch.setattr(commands, "cmd_report", broken)
    with pytest.raises(KeyError):
        main(["report", str(tmp_path / "results.db")])


def test_a_model_library_error_is_one_line(monkeypatch, tmp_path, capsys):
    from onnx.checker import ValidationError

    def refused(args):
        raise ValidationError("Field 'type' of 'value_info' is required\nbut missing.")

    monkeypatch.setattr(commands, "cmd_report", refused)
    assert main(["report", str(tmp_path / "results.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ValidationError" in err[0]
