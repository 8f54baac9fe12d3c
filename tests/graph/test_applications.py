"""The keras.applications families as a new user meets them: Keras 3 `.h5` and `.keras` files
and Keras 2 legacy files (written by tf_keras), each described, patched after every Conv2D,
DepthwiseConv2D and Dense, and reloaded in a process that never built it.

Each case checks: the rebuilt model equals the original as Keras loads it (Keras 3: the
`.keras` file loaded by Keras, which also stands for the `.h5` file Keras cannot always load;
Keras 2: the outputs tf_keras computed when it wrote the fixture); every target layer is found
(nested models included); the patched file reloads, with injection off bit-identical to the
original and with injection on different from it.

A representative subset runs by default (operators, adapted Normalization, nested models,
application layers, '/' names, SeparableConv2D, tensor kwargs); the rest is marked slow.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from app_families import FAMILIES, build, families, inputs, randomize
from helpers import FIXTURES

from classes_tool import patcher, session

sys.path.insert(0, str(FIXTURES))
from make_keras2_applications import unpack  # noqa: E402

TARGET_TYPES = ("Conv2D", "DepthwiseConv2D", "Dense")
DEFAULT = {
    ("mobilenet_v3", "keras2"), ("mobilenet_v3", "h5"), ("mobilenet_v3", "keras"),
    ("efficientnet", "h5"), ("efficientnet", "keras2"),
    ("convnext", "h5"), ("convnext", "keras"), ("convnext", "keras2"),
    ("densenet", "keras2"), ("xception", "keras2"), ("regnet", "keras2"),
    ("inception_v3", "keras2"), ("resnet", "keras"),
}
CASES = [(f, d) for f in families("keras") for d in ("h5", "keras")] + \
    [(f, "keras2") for f in families("tf_keras")]


def _param(family: str, dialect: str):
    marks = [] if (family, dialect) in DEFAULT else [pytest.mark.slow]
    return pytest.param(family, dialect, marks=marks, id=f"{family}-{dialect}")


class Reloader:
    """One long-lived process that loads patched files (it never built any of them)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("reload_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, model: Path, x: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        np.savez(folder / "x.npz", x=x)
        request = {"model": str(model), "x": str(folder / "x.npz"),
                   "out": str(folder / "reloaded.npz")}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", f"reloading {model.name} in a fresh process: {answer}"
        out = np.load(folder / "reloaded.npz")
        return out["off"], out["on"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def reloader():
    worker = Reloader()
    yield worker
    worker.close()


def _config_text(path: Path) -> str:
    if path.suffix == ".keras":
        import zipfile

        with zipfile.ZipFile(path) as z:
            return z.read("config.json").decode()
    import h5py

    with h5py.File(path) as f:
        value = f.attrs["model_config"]
    return value.decode() if isinstance(value, bytes) else str(value)


def _count_in_file(path: Path, class_name: str) -> int:
    """Layers of this class anywhere in the saved config, nested models included."""
    return json.dumps(json.loads(_config_text(path))).count(f'"class_name": "{class_name}"')


def _original(family: str, dialect: str, folder: Path, x: np.ndarray) -> tuple[Path, np.ndarray]:
    """The model file and the original's outputs as Keras (or tf_keras) computes them."""
    if dialect == "keras2":
        path = unpack(family, folder)
        stored = np.load(FIXTURES / "keras2_apps" / "outputs.npz")
        np.testing.assert_array_equal(stored[f"x_{family}"], x)
        return path, stored[f"y_{family}"]
    model = build(family, "keras")
    randomize(model, seed=sorted(FAMILIES).index(family))
    model.save(folder / "original.keras")
    reference = np.asarray(keras.models.load_model(folder / "original.keras", compile=False)(x))
    if dialect == "keras":
        return folder / "original.keras", reference
    model.save(folder / "original.h5")
    return folder / "original.h5", reference


@pytest.mark.parametrize(("family", "dialect"), [_param(f, d) for f, d in CASES])
def test_family_describe_patch_reload(family, dialect, tmp_path, reloader):
    x = inputs(family)
    path, reference = _original(family, dialect, tmp_path, x)

    loaded = session.load(path)
    rebuilt = np.asarray(loaded.model(x))
    if dialect == "keras2":  # another Keras computed the reference (grouped convolutions,
        # e.g. RegNet's, are computed another way: agreement to float32 rounding of the sums)
        np.testing.assert_allclose(rebuilt, reference, rtol=0,
                                   atol=1e-5 * float(np.abs(reference).max()) + 1e-6)
    else:
        np.testing.assert_array_equal(rebuilt, reference)

    description = patcher.describe(loaded)
    by_class: dict[str, list[str]] = {}
    for node in description["nodes"]:
        by_class.setdefault(node["class_name"], []).append(node["name"])
    types = [t for t in TARGET_TYPES if t in by_class]
    for class_name in TARGET_TYPES:  # every layer of the class, nested ones too
        assert len(by_class.get(class_name, [])) == _count_in_file(path, class_name), class_name

    out = tmp_path / f"patched{'.keras' if dialect == 'keras' else '.h5'}"
    summary = patcher.patch(path, out, after_types=types, sites=16, seed=3,
                            value_range=(-1.0, 1.0))
    assert len(summary["targets"]) == sum(len(by_class[t]) for t in types)

    off, on = reloader.run(out, x, tmp_path)
    np.testing.assert_array_equal(off, rebuilt)
    assert (on != off).any(axis=-1).any(), "injection on changed no output"
