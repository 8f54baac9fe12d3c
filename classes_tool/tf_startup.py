"""Importing TensorFlow without its start-up chatter on the terminal.

Why: TensorFlow 2.21 writes lines such as "All log messages before absl::InitializeLog() is
called are written to STDERR" and "oneDNN custom operations are on" from C++ while it loads,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says. A command given a missing file would print four such
lines before its one-line error. So the import runs with the process's stderr (file descriptor
2, where C++ writes) sent to a temporary file; afterwards everything it caught is written back
except those known lines. A Python error raised by the import is written back too, and
``TF_CPP_MIN_LOG_LEVEL=0`` (a user who wants TensorFlow's log) turns the filter off.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

#: The lines TensorFlow prints while it loads, whatever the log level (matched whole).
STARTUP_NOISE = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are "
               r"written to STDERR"),
    re.compile(r"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. .*"),
)


def without_startup_noise(text: str) -> str:
    """`text` without the lines of `STARTUP_NOISE`."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(p.fullmatch(line.rstrip("\r\n")) for p in STARTUP_NOISE))


def import_tensorflow(module: str = "tensorflow") -> None:
    """``import tensorflow``, keeping `STARTUP_NOISE` off stderr (see the module docstring)."""
    if module in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        importlib.import_module(module)
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                importlib.import_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                caught.seek(0)
                kept = without_startup_noise(caught.read().decode("utf-8", "replace"))
                if kept:
                    os.write(2, kept.encode("utf-8"))
    finally:
        os.close(saved)
