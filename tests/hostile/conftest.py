"""The hostile-input harness: run the real CLI in-process on a file built by the test and
insist on what the tool promises for bad input: exit 2, one line on stderr and no traceback,
no output (not even a partial or temporary file), and the inputs untouched.

An unexpected exception escapes `main` with its traceback and fails the test, as a bug should.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from classes_tool.cli import main


def _digest(path: Path) -> str | None:
    if path.is_symlink() and not path.exists():
        return "dangling"
    if path.is_dir():
        return "dir:" + ",".join(sorted(str(p.relative_to(path)) + ":" + (_digest(p) or "")
                                        for p in path.rglob("*") if p.is_file()))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _listing(folders) -> set[str]:
    found = set()
    for folder in folders:
        if folder.is_dir():
            found.update(str(p) for p in folder.rglob("*"))
    return found


class Hostile:
    """`run(argv, inputs=..., outputs=...)`: the CLI must refuse with one line and exit 2."""

    def __init__(self, capsys):
        self.capsys = capsys

    def run(self, argv, inputs=(), outputs=(), watch=(), expect: str | None = None) -> str:
        """Run `classes-tool argv`; `inputs` must stay byte for byte, `outputs` must not
        appear, and nothing new may appear in the folders `watch` (the outputs' folders by
        default). Returns the error message (without the `classes-tool: error: ` prefix)."""
        inputs = [Path(p) for p in inputs]
        outputs = [Path(p) for p in outputs]
        before = {p: _digest(p) for p in inputs}
        existed = {p for p in outputs if p.exists() or p.is_symlink()}
        folders = [Path(w) for w in watch] or sorted({p.parent for p in outputs})
        listed = _listing(folders)
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self.capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert code == 2, f"exit {code}, stderr: {captured.err!r}, stdout: {captured.out!r}"
        assert "Traceback" not in captured.err
        assert len(lines) == 1, f"expected one line, got {lines}"
        assert lines[0].startswith("classes-tool: error: "), lines
        assert len(lines[0]) < 1200, f"message of {len(lines[0])} characters"
        for p, digest in before.items():
            assert _digest(p) == digest, f"input {p} changed"
        for p in outputs:
            if p not in existed:
                assert not p.exists(), f"output {p} was written"
        new = _listing(folders) - listed
        assert not new, f"files left behind: {sorted(new)}"
        message = lines[0].removeprefix("classes-tool: error: ")
        if expect is not None:
            assert expect.lower() in message.lower(), message
        return message

    def ok(self, argv) -> str:
        """Run a command that must succeed (exit 0); returns its stdout."""
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self.capsys.readouterr()
        assert code == 0, captured.err
        return captured.out


@pytest.fixture
def hostile(capsys) -> Hostile:
    return Hostile(capsys)


@pytest.fixture
def cwd(tmp_path):
    """Run inside `tmp_path` (relative spellings of paths)."""
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
