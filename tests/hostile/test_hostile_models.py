"""Hostile model files and the other targets' inputs: sizes beyond the machine, configs nested
too deeply, negative dimensions, ONNX opsets nobody knows, systolic arrays too large, NaN or
text in the data of systolic, SNN, train and sweep runs (issue 19)."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import keras
import numpy as np
import onnx
import pytest
import yaml
from helpers import MODELS
from onnx import TensorProto, helper


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.h5"
    shutil.copyfile(MODELS / "digits_cnn.h5", path)
    return path


# -- Keras files -------------------------------------------------------------------------------

def _huge_weights(path):
    with h5py.File(path, "r+") as f:
        del f["model_weights/fc1/fc1/kernel"]
        f["model_weights/fc1/fc1"].create_dataset("kernel", shape=(10**6, 10**6), dtype="f4")


def _nested_config(path):
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = "[" * 100_000 + "]" * 100_000


def _negative_dimension(path):
    with h5py.File(path, "r+") as f:
        config = f.attrs["model_config"]
        f.attrs["model_config"] = config.replace('"batch_shape": [null, 8, 8, 1]',
                                                 '"batch_shape": [null, 8, -3, 1]')


@pytest.mark.parametrize("damage, expect", [(_huge_weights, "memory"),
                                            (_nested_config, "nested too deeply"),
                                            (_negative_dimension, "negative")])
def test_damaged_keras_file(hostile, model, tmp_path, damage, expect):
    damage(model)
    out = tmp_path / "d.json"
    hostile.run(["describe", model, "-o", out], inputs=[model], outputs=[out], expect=expect)


def test_a_graph_3000_layers_deep(hostile, tmp_path):
    layers = [{"class_name": "InputLayer", "name": "inp", "inbound_nodes": [],
               "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "inp"}}]
    for i in range(3000):
        layers.append({"class_name": "Activation", "name": f"a{i}",
                       "config": {"name": f"a{i}", "activation": "relu", "dtype": "float32"},
                       "inbound_nodes": [[[layers[-1]["name"], 0, 0, {}]]]})
    config = {"class_name": "Functional", "config": {
        "name": "deep", "layers": layers, "input_layers": [["inp", 0, 0]],
        "output_layers": [[layers[-1]["name"], 0, 0]]}}
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([la["name"].encode() for la in layers])
        for la in layers:
            weights.create_group(la["name"]).attrs["weight_names"] = np.array([], dtype="S1")
    out = tmp_path / "d.json"
    hostile.run(["describe", path, "-o", out], inputs=[path], outputs=[out])


# -- ONNX files --------------------------------------------------------------------------------

def _onnx(path, node=None, inputs=(1, 4), initializers=(), opset=17):
    graph = helper.make_graph(
        [node or helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inputs))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _initializer_without_data(path):
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])
    return _onnx(path, helper.make_node("MatMul", ["x", "w"], ["y"]), (1, 10**6), [weight])


ONNX_CASES = {
    "initializer_without_data": (_initializer_without_data, "memory"),
    "input_of_10_12": (lambda p: _onnx(p, inputs=(1, 10**12)), "memory"),
    "opset_99": (lambda p: _onnx(p, opset=99), "opset 99"),
}


@pytest.mark.parametrize("kind", sorted(ONNX_CASES))
@pytest.mark.parametrize("command", [["convert"], ["convert", "--no-verify"], ["describe"]])
def test_hostile_onnx(hostile, tmp_path, kind, command):
    make, expect = ONNX_CASES[kind]
    path = make(tmp_path / "m.onnx")
    out = tmp_path / ("o.h5" if command[0] == "convert" else "o.json")
    hostile.run([command[0], path, "-o", out, *command[1:]], inputs=[path], outputs=[out],
                expect=expect)


# -- systolic, SNN, train and sweep data ------------------------------------------------------

def _systolic(tmp_path, model, **changes):
    config = {"target": "systolic", "model": str(model), "data": "d.npz", "inputs": 4,
              "layers": ["fc2"], "faults": 2, "output": "run",
              "array": {"n1": 4, "n2": 4, "n3": 4}}
    config.update(changes)
    path = tmp_path / "sys.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _digits(n=4):
    with np.load(MODELS / "digits_test.npz") as d:
        return d["x"][:n].copy(), d["y"][:n].copy()


@pytest.mark.parametrize("kind", ["string_labels", "nan_inputs"])
def test_systolic_data(hostile, model, tmp_path, kind):
    x, y = _digits()
    if kind == "string_labels":
        y = np.array([str(v) for v in y])
    else:
        x[1, 2, 3, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)
    config = _systolic(tmp_path, model)
    hostile.run(["campaign", config], inputs=[config, tmp_path / "d.npz"],
                outputs=[tmp_path / "run"], expect="text" if kind == "string_labels" else "NaN")


def test_systolic_array_too_large(hostile, model, tmp_path):
    x, y = _digits()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    config = _systolic(tmp_path, model, array={"n1": 10**9, "n2": 8, "n3": 8})
    hostile.run(["campaign", config], inputs=[config], outputs=[tmp_path / "run"],
                expect="too large")


@pytest.mark.parametrize("kind", ["nan_inputs", "npy_renamed"])
def test_snn_data(hostile, tmp_path, kind):
    with np.load(MODELS / "snn" / "snn_digits_test.npz") as d:
        x, y = d["x"][:4].copy(), d["y"][:4].copy()
    data = tmp_path / "d.npz"
    if kind == "nan_inputs":
        x[0, 0, 0, 0, 0] = np.nan
        np.savez(data, x=x, y=y)
    else:
        np.save(tmp_path / "d.npy", x)
        os.replace(tmp_path / "d.npy", data)
    config = tmp_path / "snn.yaml"
    config.write_text(yaml.safe_dump({
        "target": "snn", "model": str(MODELS / "snn" / "snn_digits.keras"), "data": "d.npz",
        "output": "run", "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif2"],
                                                  "sampling_k": 2}}]}))
    hostile.run(["campaign", config, "--quiet"], inputs=[config, data],
                outputs=[tmp_path / "run"], expect="NaN" if kind == "nan_inputs" else ".npy")


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    inp = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inp)
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(hidden)).save(
        tmp_path / "toy.keras")
    x = rng.random((16, 6)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64))
    return {"model": "toy.keras", "data": {"train": "train.npz"},
            "training": {"epochs": 1, "batch_size": 8, "output": "tuned.keras"},
            "fault_injection": {"probability": 10, "seed": 3}}


def test_train_refuses_to_overwrite_its_model(hostile, toy, tmp_path):
    toy["training"]["output"] = "toy.keras"
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump(toy))
    hostile.run(["train", config, "--out", tmp_path, "--quiet"],
                inputs=[config, tmp_path / "toy.keras"], watch=[tmp_path], expect="model")


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("kind", ["string_labels", "npy_renamed"])
def test_train_and_sweep_data(hostile, toy, tmp_path, command, kind):
    data = tmp_path / "train.npz"
    if kind == "string_labels":
        np.savez(data, x=np.zeros((16, 6), np.float32), y=np.array(["cat"] * 16))
    else:
        np.save(tmp_path / "t.npy", np.zeros((16, 6), np.float32))
        os.replace(tmp_path / "t.npy", data)
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump(toy))
    out = tmp_path / "out"
    hostile.run([command, config, "--out", out, "--quiet"], inputs=[config, data],
                outputs=[out], expect="text" if kind == "string_labels" else ".npy")
