"""Hostile conditions that need real processes (issue 19): two campaigns started at the same
moment into one fresh folder, and a disk that really fills up during a campaign (a small tmpfs
in a private mount namespace). Each is one line and exit 2, and no stored row is lost or mixed.

The campaigns run in child processes that load the tool once and then run the commands the test
sends them, one JSON line each way: what a command writes to stderr is its own (the one-line
promise is about the tool's messages, not TensorFlow's start-up lines).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import MODELS, stored_rows

#: A child process: answers "ready" once the tool is loaded, then one JSON line per command:
#: ["main", *argv] -> [exit code, stderr], ["fill", folder, free] (leaves `free` bytes on the
#: folder's file system) -> bytes written, ["unlink", path], ["backup", db, copy] -> null.
CHILD = r"""
import contextlib, io, json, os, sqlite3, sys

answers = sys.stdout
sys.stdout = sys.stderr  # only answers on the answer stream
from classes_tool.cli import main


def answer(value):
    answers.write(json.dumps(value) + "\n")
    answers.flush()


answer("ready")
for line in iter(sys.stdin.readline, ""):
    kind, *args = json.loads(line)
    if kind == "main":
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(args)
        answer([code, err.getvalue()])
    elif kind == "fill":
        folder, free = args
        st = os.statvfs(folder)
        size = max(0, st.f_bavail * st.f_frsize - free)
        with open(os.path.join(folder, "filler"), "wb") as fh:
            fh.write(b"\0" * size)
        answer(size)
    elif kind == "unlink":
        os.unlink(args[0])
        answer(None)
    elif kind == "backup":
        with sqlite3.connect(args[0]) as db, sqlite3.connect(args[1]) as copy:
            db.backup(copy)
        answer(None)
"""

ROWS = 6 * 4  # faults x inputs of the tiny campaign


@pytest.fixture
def files(tmp_path):
    """A model, data and a tiny layer campaign config (the output folder is given by --out)."""
    model = tmp_path / "m.h5"
    shutil.copyfile(MODELS / "digits_cnn.h5", model)
    with np.load(MODELS / "digits_test.npz") as d:
        np.savez(tmp_path / "d.npz", x=d["x"][:4], y=d["y"][:4])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": "m.h5", "data": "d.npz", "targets": {"nodes": ["fc1"]}, "faults": 6,
        "seed": 3, "batch_size": 8, "value_range": [0.0, 3.0], "output": "run"}))
    return config


class Child:
    """A process running CHILD, started with `prefix` (e.g. a namespace) before Python."""

    def __init__(self, tmp_path: Path, name: str, prefix=()):
        self.log = tmp_path / f"{name}.log"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([*prefix, sys.executable, "-c", CHILD],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True, env=env)

    def send(self, *command) -> None:
        line = [c if isinstance(c, int) else str(c) for c in command]
        self.proc.stdin.write(json.dumps(line) + "\n")

    def flush(self) -> None:
        self.proc.stdin.flush()

    def answer(self, timeout: float = 120.0):
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not got or not got[0]:
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"no answer from the child (exit {self.proc.poll()}): {tail}")
        return json.loads(got[0])

    def run(self, *command, timeout: float = 120.0):
        self.send(*command)
        self.flush()
        return self.answer(timeout)

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _one_line(stderr: str) -> str:
    """The tool's one error line (without its prefix); fails on anything else."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert lines[0].startswith("classes-tool: error: "), lines
    return lines[0].removeprefix("classes-tool: error: ")


def _campaign(config, out, *more):
    return ["main", "campaign", str(config), "--quiet", "--out", str(out), *more]


# -- the start-up race between two processes --------------------------------------------------

RACES = 5


def test_two_campaigns_started_together_into_one_folder(files, tmp_path):
    """Two processes start the same campaign into one fresh folder at the same moment, five
    times: each time exactly one runs it (exit 0, a database with every row, the same rows as a
    campaign that ran alone) and the other is refused with one line (exit 2), deleting nothing
    of the winner's."""
    config = files
    children = [Child(tmp_path, f"child{i}") for i in range(2)]
    try:
        for child in children:
            assert child.answer() == "ready"
        alone = []
        for i, child in enumerate(children):  # each alone first: loaded, and the reference
            child.send(*_campaign(config, tmp_path / f"alone{i}"))
            child.flush()
        for i, child in enumerate(children):
            code, err = child.answer()
            assert code == 0, err
            alone.append(stored_rows(tmp_path / f"alone{i}" / "results.db"))
        assert alone[0] == alone[1] and len(alone[0]) == ROWS
        expected_files = sorted(p.name for p in (tmp_path / "alone0").iterdir())

        overlapped = 0
        for race in range(RACES):
            out = tmp_path / f"race{race}"
            for child in children:
                child.send(*_campaign(config, out))
            for child in children:  # both lines are sent before either child reads one
                child.flush()
            results = [child.answer() for child in children]
            codes = sorted(code for code, _ in results)
            assert codes == [0, 2], results
            winner = next(err for code, err in results if code == 0)
            loser = next(err for code, err in results if code == 2)
            assert "Traceback" not in winner and "classes-tool: error" not in winner, winner
            message = _one_line(loser)
            assert "another campaign" in message or "already exists" in message, message
            overlapped += "another campaign" in message
            db = out / "results.db"
            assert db.is_file(), f"race {race}: the winner's database is gone"
            assert stored_rows(db) == alone[0], f"race {race}: rows lost or mixed"
            assert sorted(p.name for p in out.iterdir()) == expected_files
        # the two ran together (the loser found the winner at work), not one after the other
        assert overlapped >= 1, "the campaigns never overlapped: no race was tested"
    finally:
        for child in children:
            child.close()


# -- a real full disk ---------------------------------------------------------------------------

def _namespace_prefix(mount_point: Path, size: str) -> list[str] | None:
    """The command prefix that runs a program in a private mount namespace with a tmpfs of
    `size` at `mount_point`, or None when this machine cannot (no unshare, no privileges)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return None
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else [
        "unshare", "--user", "--map-root-user", "--mount"]
    prefix = [*unshare, "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && '
              'exec "$@"', "sh", str(mount_point)]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


def test_a_disk_that_fills_up_during_a_campaign(files, tmp_path):
    """The database lives on a 2 MiB tmpfs filled up to a few pages: the campaign stops with
    one line and exit 2, every row it stored is kept and right; once space is freed, --resume
    finishes with the rows of a campaign that never stopped."""
    config = files
    raw = yaml.safe_load(config.read_text())
    raw["faults"] = 300
    config.write_text(yaml.safe_dump(raw))
    disk = tmp_path / "disk"
    disk.mkdir()
    prefix = _namespace_prefix(disk, "2m")
    if prefix is None:
        pytest.skip("needs unshare and mount (a private mount namespace with a tmpfs): "
                    "not available to this user on this machine")
    child = Child(tmp_path, "disk", prefix)
    try:
        assert child.answer() == "ready"
        code, err = child.run(*_campaign(config, tmp_path / "alone"))
        assert code == 0, err
        alone = stored_rows(tmp_path / "alone" / "results.db")
        assert len(alone) == 300 * 4

        assert child.run("fill", disk, 384 * 1024) > 0  # room for the start and some batches
        code, err = child.run(*_campaign(config, disk / "run"))
        assert code == 2, err
        message = _one_line(err)
        assert "disk is full" in message and "--resume" in message, message
        child.run("unlink", disk / "filler")  # space again
        child.run("backup", disk / "run" / "results.db", tmp_path / "stopped.db")
        kept = stored_rows(tmp_path / "stopped.db")
        assert 0 < len(kept) < len(alone), "the disk did not fill mid-campaign"
        assert set(kept) <= set(alone), "a stored row differs from the run that never stopped"

        code, err = child.run(*_campaign(config, disk / "run", "--resume"))
        assert code == 0, err
        child.run("backup", disk / "run" / "results.db", tmp_path / "resumed.db")
        assert stored_rows(tmp_path / "resumed.db") == alone
    finally:
        child.close()
    assert not any(disk.iterdir()), "the tmpfs was not private to the child"
