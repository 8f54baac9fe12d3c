"""Atomic output files: what a destination may be, and errors that name it."""

import errno
import os
import tempfile

import pytest

from classes_tool.errors import UserError
from classes_tool.files import write_text_atomic


def test_a_symbolic_link_is_written_through(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_a_device_pipe_or_folder_is_refused_and_left_as_it_was(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=f"{fifo} is not a regular file"):
        write_text_atomic(fifo, "x")
    with pytest.raises(UserError, match="not a regular file"):
        write_text_atomic(os.devnull, "x")  # was replaced by a plain file when run as root
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
    with pytest.raises(UserError, match=f"{tmp_path} is a folder"):
        write_text_atomic(tmp_path, "x")
    assert fifo.exists() and not fifo.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_folder_that_cannot_be_written_is_named_not_the_temporary_file(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UserError, match=f"cannot write {tmp_path / 'out.csv'}: Read-only"):
        write_text_atomic(tmp_path / "out.csv", "x")


def test_a_writer_failing_on_the_temporary_file_names_the_destination(tmp_path):
    from classes_tool.files import atomic_path

    with pytest.raises(UserError, match=f"cannot write {tmp_path / 'out.txt'}"):
        with atomic_path(tmp_path / "out.txt") as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    with pytest.raises(OSError, match="other"):  # an error about another file is not renamed
        with atomic_path(tmp_path / "out.txt"):
            raise OSError(errno.ENOENT, "other", str(tmp_path / "input.h5"))
    assert list(tmp_path.iterdir()) == []
