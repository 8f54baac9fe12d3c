"""Hostile inputs at the edges of what the libraries and the machine support (issue 19): an
ONNX opset that onnx knows but onnxruntime does not, `.keras` files and systolic models that
declare more weights than the memory holds."""

from __future__ import annotations

import io
import shutil
import zipfile

import h5py
import keras
import numpy as np
import onnx
import pytest
import yaml
from helpers import MODELS
from onnx import TensorProto, helper

# -- an opset onnx knows and onnxruntime does not ---------------------------------------------


@pytest.fixture
def onnx_ahead(monkeypatch):
    """The opset one past the newest the installed onnx knows, and an onnx that knows it: what
    upgrading onnx alone gives (onnxruntime is built against an onnx release, so it does not
    run the newer opset; this onnx's own check lets it through)."""
    opset = onnx.defs.onnx_opset_version() + 1
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: opset)
    return opset


def _relu(path, opset):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", [["convert"], ["convert", "--no-verify"], ["describe"]])
def test_an_opset_onnxruntime_does_not_run(hostile, tmp_path, onnx_ahead, command):
    path = _relu(tmp_path / "m.onnx", onnx_ahead)
    out = tmp_path / ("o.h5" if command[0] == "convert" else "o.json")
    message = hostile.run([command[0], path, "-o", out, *command[1:]], inputs=[path],
                          outputs=[out], expect=f"opset {onnx_ahead}")
    assert "onnxruntime" in message and f"up to {onnx_ahead - 1}" in message, message


def test_the_newest_opset_onnxruntime_runs_still_converts(hostile, tmp_path):
    from classes_tool.convert.verify import onnxruntime_max_opset

    newest = onnxruntime_max_opset()
    assert newest is not None and newest >= 17
    path = _relu(tmp_path / "m.onnx", newest)
    hostile.ok(["convert", path, "-o", tmp_path / "o.h5"])
    assert (tmp_path / "o.h5").is_file()


# -- .keras files and systolic models that declare too much -----------------------------------

def _toy_keras(path):
    inp = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="fc1")(inp)
    keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="fc2")(hidden)).save(path)
    return path


def _huge_keras_weights(path, compression=zipfile.ZIP_STORED):
    """Rewrite the .keras file `path` so that its weights file declares a 10**6 x 10**6
    float32 kernel (10**12 values) in a few kilobytes: the data is never written. Keras
    stores the weights uncompressed; `compression` may say otherwise."""
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info.filename)) for info in z.infolist()]
    for i, (info, data) in enumerate(members):
        if info.filename == "model.weights.h5":
            buffer = io.BytesIO(data)
            with h5py.File(buffer, "r+") as f:
                kernels = [name for name in _datasets(f) if f[name].ndim == 2]
                group, name = kernels[0].rsplit("/", 1)
                del f[kernels[0]]
                f[group].create_dataset(name, shape=(10**6, 10**6), dtype="f4")
            info.compress_type = compression
            members[i] = (info, buffer.getvalue())
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            z.writestr(info, data)
    return path


def _datasets(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.fixture
def no_model_loading(monkeypatch):
    """Keras must not be asked to load a model whose declared sizes are refused."""
    def refused(*args, **kwargs):
        raise AssertionError("the model was loaded before its sizes were checked")

    monkeypatch.setattr(keras.saving, "load_model", refused)
    monkeypatch.setattr(keras.models, "load_model", refused)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_keras_file_declaring_too_much(hostile, tmp_path, no_model_loading, compression):
    model = _huge_keras_weights(_toy_keras(tmp_path / "m.keras"), compression)
    assert model.stat().st_size < 100_000
    out = tmp_path / "d.json"
    message = hostile.run(["describe", model, "-o", out], inputs=[model], outputs=[out],
                          expect="memory")
    assert "model.weights.h5" in message and "(1000000, 1000000)" in message, message


def test_a_keras_file_that_fits_still_loads(hostile, tmp_path):
    model = _toy_keras(tmp_path / "m.keras")
    hostile.ok(["describe", model, "-o", tmp_path / "d.json"])
    assert (tmp_path / "d.json").is_file()


def _huge_h5_weights(path):
    with h5py.File(path, "r+") as f:
        del f["model_weights/fc1/fc1/kernel"]
        f["model_weights/fc1/fc1"].create_dataset("kernel", shape=(10**6, 10**6), dtype="f4")
    return path


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_a_systolic_model_declaring_too_much(hostile, tmp_path, no_model_loading, kind):
    if kind == "keras":
        model = _huge_keras_weights(_toy_keras(tmp_path / "m.keras"))
        x = np.zeros((4, 6), np.float32)
        layers = ["fc2"]
    else:
        model = _huge_h5_weights(shutil.copyfile(MODELS / "digits_cnn.h5", tmp_path / "m.h5"))
        with np.load(MODELS / "digits_test.npz") as d:
            x = d["x"][:4]
        layers = ["fc2"]
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, np.int64))
    config = tmp_path / "sys.yaml"
    config.write_text(yaml.safe_dump({
        "target": "systolic", "model": str(model), "data": "d.npz", "inputs": 4,
        "layers": layers, "faults": 2, "output": "run", "array": {"n1": 4, "n2": 4, "n3": 4}}))
    message = hostile.run(["campaign", config], inputs=[config, model],
                          outputs=[tmp_path / "run"], expect="memory")
    assert "(1000000, 1000000)" in message, message


def test_snn_and_sweep_models_declaring_too_much(hostile, tmp_path, no_model_loading):
    """Every target that loads a Keras file itself goes through the same size check."""
    model = _huge_keras_weights(_toy_keras(tmp_path / "m.keras"))
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 6), np.float32), y=np.zeros(4, np.int64))
    snn = tmp_path / "snn.yaml"
    snn.write_text(yaml.safe_dump({
        "target": "snn", "model": str(model), "data": "d.npz", "output": "run",
        "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["fc1"]}}]}))
    message = hostile.run(["campaign", snn], inputs=[snn, model], outputs=[tmp_path / "run"],
                          expect="memory")
    assert "(1000000, 1000000)" in message, message
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "model": str(model), "data": {"test": "d.npz"},
        "fault_injection": {"enabled": True, "probability": 1.0, "mode": "full_model",
                            "injection_type": "random", "bit_width": 8}}))
    message = hostile.run(["sweep", sweep, "--out", tmp_path / "sw"], inputs=[sweep, model],
                          outputs=[tmp_path / "sw"], expect="memory")
    assert "(1000000, 1000000)" in message, message
