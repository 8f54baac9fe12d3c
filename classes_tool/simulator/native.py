"""An optional compiled TensorFlow kernel that writes injection entries in place.

Why: on CPU, TensorFlow's `tensor_scatter_nd_update` copies the whole tensor before writing
even one element, and that copy after every patched layer is most of the ErrorSimulator's cost
(bench/overhead.py). `ClassesWriteSites` (native/write_sites.cc) takes over the tensor's
buffer when TensorFlow's executor says no one else holds it, and copies otherwise, so it is
exactly as safe as TensorFlow's own elementwise ops.

It is built once per TensorFlow version with the C++ compiler and TensorFlow's own compile
flags (`classes-tool build-native`; `make` does it during set-up) into a cache folder
(`$CLASSES_TOOL_CACHE`, default ``~/.cache/classes-tool``). Nothing is compiled behind the
user's back: when the library is missing, or ``CLASSES_TOOL_NATIVE=0``, the simulator uses
TensorFlow's stock ops and gives the same results.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from classes_tool.errors import UserError

SOURCE = Path(__file__).with_name("native") / "write_sites.cc"

_loaded: dict[str, object] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("CLASSES_TOOL_CACHE") or Path.home() / ".cache" / "classes-tool")


def _flags() -> list[str]:
    import tensorflow as tf

    return [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


@functools.cache
def _library_name() -> str:
    """The file name for this TensorFlow, its flags and this source (fixed for a process)."""
    import tensorflow as tf

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(_flags()).encode()).hexdigest()[:12]
    return f"write_sites-tf{tf.__version__}-{key}.so"


def library_path() -> Path:
    """Where the library for this TensorFlow and this source lives (it may not exist yet)."""
    return cache_dir() / _library_name()


def find_program(variable: str, names: tuple[str, ...]) -> str | None:
    """The program named by $variable, else the first of `names` on the PATH."""
    for name in (os.environ.get(variable), *names):
        if name and shutil.which(name):
            return name
    return None


def compiler() -> str | None:
    return find_program("CXX", ("c++", "g++", "clang++"))


def compile_library(path: Path, command: Callable[[str], list[str]], what: str) -> Path:
    """Run `command(output)` into a temporary file beside `path`, then rename it into place, so
    a failed or interrupted build never leaves a library a later process would load; a failure
    is one line naming `what` and the compiler's last message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(command(tmp), capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise UserError(f"building the {what} failed: {last}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def build(force: bool = False) -> Path:
    """Compile the kernel (a few seconds) unless it is already built; returns its path."""
    path = library_path()
    if path.exists() and not force:
        return path
    cxx = compiler()
    if cxx is None:
        raise UserError("no C++ compiler found (set CXX); the simulator keeps using "
                        "TensorFlow's scatter")
    compile_library(path, lambda out: [cxx, "-shared", "-fPIC", "-O2", "-w", str(SOURCE), "-o",
                                       out, *_flags()], "native write kernel")
    _loaded.pop(str(path), None)  # a process that looked before the build may load it now
    return path


def enabled() -> bool:
    return os.environ.get("CLASSES_TOOL_NATIVE", "1") != "0"


def load():
    """The loaded op module, or None (not built, disabled, or failing to load)."""
    if not enabled():
        return None
    path = library_path()
    key = str(path)
    if key not in _loaded:
        module = None
        if path.exists():
            import tensorflow as tf

            try:
                module = tf.load_op_library(key)
                _register_gradient(module)
            except (tf.errors.NotFoundError, OSError):  # built for another TF build
                module = None
        _loaded[key] = module
    return _loaded[key]


_GRADIENT: list[object] = []  # the module whose op the registered gradient calls


def _register_gradient(module) -> None:
    """Gradient of the write (used only when a model trains with injection on): the written
    positions pass no gradient back to x; the sites are data, not trained."""
    if _GRADIENT:
        return
    import tensorflow as tf

    @tf.RegisterGradient("ClassesWriteSites")
    def _grad(op, dy):
        start, length, positions, values = op.inputs[1:]
        dx = module.classes_write_sites(dy, start, length, positions, tf.zeros_like(values))
        return dx, None, None, None, None

    _GRADIENT.append(module)


def write_sites(x, start, length, positions, values):
    """`x` with sample b's site (entries start[b] .. start[b]+length[b]-1 of the ragged
    positions/values) written, in place when TensorFlow allows it; None when the native kernel
    is not available (the caller then uses its stock-op path)."""
    module = load()
    if module is None:
        return None
    return module.classes_write_sites(x, start, length, positions, values)
