"""TensorFlow's start-up lines stay off stderr; everything else an import writes gets through."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from classes_tool.tf_startup import import_tensorflow, without_startup_noise

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
         "I0000 00:00:1795477177.852532    2553 port.cc:153] oneDNN custom operations are on. "
         "You may see slightly different numerical results due to floating-point round-off "
         "errors from different computation orders. To turn them off, set the environment "
         "variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")


CUDA_NOISE = ("I0000 00:00:1796508112.790970   24996 cudart_stub.cc:31] Could not find cuda "
              "drivers on your machine, GPU will not be used.\n"
              "E0000 00:00:1796508147.933718   25089 cuda_platform.cc:52] failed call to cuInit: "
              "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")


def test_only_the_known_lines_are_dropped():
    text = NOISE + "a real warning\n" + NOISE + "I0000 other.cc:1] oneDNN elsewhere\n"
    assert without_startup_noise(text) == "a real warning\nI0000 other.cc:1] oneDNN elsewhere\n"
    # the GPU-capable build on a machine without a GPU driver: it says the CPU will be used
    assert without_startup_noise(CUDA_NOISE + "a real error\n") == "a real error\n"


LOADER = ("import importlib.util, sys\n"
          "spec = importlib.util.spec_from_file_location('tf_startup', sys.argv[1])\n"
          "module = importlib.util.module_from_spec(spec)\n"
          "spec.loader.exec_module(module)\n"
          "module.import_tensorflow(sys.argv[2])\n")


def import_in_a_fresh_process(tmp_path, module, **env):
    """`import_tensorflow(module)` in a process of its own (one thread, as at a command's
    start; the filter forks only then), without importing TensorFlow."""
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", LOADER,
                           str(ROOT / "classes_tool" / "tf_startup.py"), module],
                          capture_output=True, text=True, timeout=120,
                          env=dict(base, PYTHONPATH=str(tmp_path), **env))


def test_what_an_import_writes_to_the_file_descriptor_gets_through_but_the_noise(tmp_path):
    (tmp_path / "noisy_module.py").write_text(
        "import os\n"
        f"os.write(2, {NOISE.encode()!r} + b'kept line\\n')\n"
        "raise ImportError('the real failure')\n")
    done = import_in_a_fresh_process(tmp_path, "noisy_module")
    assert done.returncode == 1
    assert done.stderr.startswith("kept line\nTraceback") and "the real failure" in done.stderr
    assert "InitializeLog" not in done.stderr and "oneDNN" not in done.stderr
    # the user asked for TensorFlow's log: nothing is filtered
    done = import_in_a_fresh_process(tmp_path, "noisy_module", TF_CPP_MIN_LOG_LEVEL="0")
    assert done.stderr.startswith(NOISE + "kept line\n")


def test_with_other_threads_running_the_import_is_left_alone(tmp_path, monkeypatch, capfd):
    """Forking a process that runs other threads is not safe: then nothing is filtered (and
    nothing is lost)."""
    import threading

    (tmp_path / "noisy_threaded.py").write_text(
        "import os\n"
        f"os.write(2, {NOISE.encode()!r} + b'kept line\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        import_tensorflow("noisy_threaded")
    finally:
        stop.set()
        other.join()
    assert capfd.readouterr().err == NOISE + "kept line\n"


def test_the_last_words_of_an_import_that_aborts_get_through(tmp_path):
    """A fatal check in TensorFlow's C++ aborts the process mid-import: what it wrote first
    still reaches stderr (the filter is a process of its own)."""
    (tmp_path / "dying_module.py").write_text(
        "import os\n"
        f"os.write(2, {NOISE.encode()!r} + b'F0000 fatal: this CPU lacks AVX\\n')\n"
        "os.abort()\n")
    done = import_in_a_fresh_process(tmp_path, "dying_module")
    assert done.returncode != 0
    assert done.stderr == "F0000 fatal: this CPU lacks AVX\n"


@pytest.mark.slow
def test_a_command_given_a_missing_file_prints_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "classes_tool.cli", "describe",
                           str(tmp_path / "missing.h5")], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"classes-tool: error: model file not found: "
                                        f"{tmp_path / 'missing.h5'}"]
