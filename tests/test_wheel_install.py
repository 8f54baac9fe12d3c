"""The package works when installed as a wheel, outside the checkout: error models, the example
model and data, and the native sources ship inside it and are found through importlib.resources.
The wheel is built here, installed into a folder of its own (reusing the project's installed
dependencies, never the checkout), and the real CLI runs from a folder outside the checkout."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, env, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("classes_tool-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                              "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    work = tmp / "work"  # outside the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="2")
    return wheel, site, work, env


def test_the_wheel_holds_what_the_tool_reads(installed):
    wheel, _, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("classes_tool/package_data/error_models/conv_gemm.json",
                 "classes_tool/package_data/error_models/LICENSE",
                 "classes_tool/package_data/digits_cnn.h5",
                 "classes_tool/package_data/digits_test.npz",
                 "classes_tool/simulator/native/draw_sites.c",
                 "classes_tool/simulator/native/write_sites.cc"):
        assert name in names, name


def test_the_installed_tool_runs_outside_the_checkout(installed):
    _, site, work, env = installed
    where = _run(["-c", "import classes_tool, sys; print(classes_tool.__file__); "
                        "from classes_tool.simulator.error_model import load_error_model; "
                        "print(load_error_model('conv_gemm').name)"], work, env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines()[0].startswith(str(site)), where.stdout  # not the checkout
    assert "conv_gemm" in where.stdout
    model = site / "classes_tool" / "package_data" / "digits_cnn.h5"
    cli = ["-m", "classes_tool.cli"]
    result = _run([*cli, "describe", str(model), "-o", "d.json"], work, env)
    assert result.returncode == 0 and (work / "d.json").is_file(), result.stderr
    result = _run([*cli, "patch", str(model), "--after-type", "Conv2D", "--error-model",
                   "conv_gemm", "--sites", "20", "-o", "p.h5"], work, env)
    assert result.returncode == 0 and (work / "p.h5").is_file(), result.stderr
    result = _run([*cli, "demo", "--quiet"], work, env)
    assert result.returncode == 0, result.stderr
    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": str(model), "data": "example", "inputs": 4,
                                      "targets": {"nodes": ["conv2"]}, "faults": 3, "seed": 1}))
    result = _run([*cli, "campaign", str(config), "--out", "run", "--quiet"], work, env)
    assert result.returncode == 0, result.stderr
    assert (work / "run" / "results.db").is_file()
    result = _run([*cli, "report", "run/results.db", "-o", "rep"], work, env)
    assert result.returncode == 0 and (work / "rep" / "summary.md").is_file(), result.stderr
