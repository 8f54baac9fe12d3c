"""Importing TensorFlow without its start-up chatter on the terminal.

Why: TensorFlow 2.21 writes lines such as "All log messages before absl::InitializeLog() is
called are written to STDERR" and "oneDNN custom operations are on" from C++ while it loads,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says. A command given a missing file would print four such
lines before its one-line error. So the import runs with the process's stderr (file descriptor
2, where C++ writes) sent through a pipe to a forked filter process, which passes on everything
but those known lines as it comes. Being a separate process, the filter still passes on the
last words of an import that aborts the interpreter (a fatal check in TensorFlow's C++).

Not filtered: where the process already runs other threads (forking it would not be safe),
has no fork or no stderr, and when ``TF_CPP_MIN_LOG_LEVEL=0`` (a user who wants TF's log).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading

#: The lines TensorFlow prints while it loads, whatever the log level (matched whole). The
#: CUDA ones come from the `tensorflow` package (the build that uses a GPU when there is one) on
#: a machine without a GPU driver: they say only that the CPU will be used.
STARTUP_NOISE = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are "
               r"written to STDERR"),
    re.compile(r"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. .*"),
    re.compile(r"I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on "
               r"your machine, GPU will not be used\."),
    re.compile(r"E\d{4} [\d:.]+ +\d+ cuda_(platform|executor|driver)\.cc:\d+\] failed call "
               r"to cuInit: .*"),
)


def without_startup_noise(text: str) -> str:
    """`text` without the lines of `STARTUP_NOISE`."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(p.fullmatch(line.rstrip("\r\n")) for p in STARTUP_NOISE))


def import_tensorflow(module: str = "tensorflow") -> None:
    """``import tensorflow``, keeping `STARTUP_NOISE` off stderr (see the module docstring)."""
    if (module in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0"
            or not hasattr(os, "fork") or threading.active_count() > 1):
        importlib.import_module(module)
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        importlib.import_module(module)
        return
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the filter: until every writer is gone, pass on all but the noise
        os.close(write_end)
        try:
            with os.fdopen(read_end, "rb") as caught:
                for line in caught:
                    if without_startup_noise(line.decode("utf-8", "replace")):
                        os.write(saved, line)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        tf = importlib.import_module(module)
        if module == "tensorflow":  # the devices are looked for once, here, not mid-command
            tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the filter drains it and exits
        os.close(saved)
        os.waitpid(child, 0)
