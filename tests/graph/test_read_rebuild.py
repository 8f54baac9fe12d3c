"""Reading both Keras dialects from files and rebuilding them with their weights."""

import json

import h5py
import keras
import numpy as np
import pytest
from helpers import FIXTURES, MODELS, branching_inputs, branching_model

from classes_tool.errors import UserError
from classes_tool.graph import TensorRef, build_model, graph_from_model, read_model


def test_keras2_functional_file_rebuilds_with_its_weights():
    graph = read_model(FIXTURES / "keras2_functional.h5")
    assert graph.dialect == "keras2"
    assert graph.inputs == ["img", "aux"]
    assert graph.outputs == [TensorRef("probs", 0), TensorRef("score", 0)]
    assert sorted(graph.consumers("conv_a")) == ["add", "conv_b", "dw"]
    ref = np.load(FIXTURES / "keras2_inputs.npz")
    with pytest.warns(UserWarning, match="groups"):
        model = build_model(graph)
    probs, score = model.predict([ref["img"], ref["aux"]], verbose=0)
    # outputs Keras 2 itself computed when it wrote the file
    np.testing.assert_allclose(probs, ref["probs"], atol=1e-6)
    np.testing.assert_allclose(score, ref["score"], atol=1e-5)
    bn = model.get_layer("bn")
    with h5py.File(FIXTURES / "keras2_functional.h5") as f:
        np.testing.assert_array_equal(bn.moving_variance.numpy(),
                                      f["model_weights/bn/bn/moving_variance:0"][()])


def test_keras2_sequential_file():
    graph = read_model(FIXTURES / "keras2_sequential.h5")
    assert graph.dialect == "keras2"
    assert graph.names() == ["c1_input", "c1", "mp", "fl", "out"]
    ref = np.load(FIXTURES / "keras2_inputs.npz")
    out = build_model(graph).predict(ref["small"], verbose=0)
    np.testing.assert_allclose(out, ref["seq_out"], atol=1e-6)


@pytest.mark.parametrize("name", ["digits_cnn.h5", "digits_cnn.keras"])
def test_keras3_files_rebuild_bit_exact(name, digits_x):
    original = keras.models.load_model(MODELS / name)
    graph = read_model(MODELS / name)
    assert graph.dialect == "keras3"
    rebuilt = build_model(graph)
    np.testing.assert_array_equal(rebuilt.predict(digits_x, verbose=0),
                                  original.predict(digits_x, verbose=0))


def test_keras3_config_uses_keras_tensor_history():
    with h5py.File(MODELS / "digits_cnn.h5") as f:
        config = json.loads(f.attrs["model_config"])
    add = next(layer for layer in config["config"]["layers"] if layer["name"] == "residual")
    assert add["inbound_nodes"][0]["args"][0][0]["class_name"] == "__keras_tensor__"
    graph = read_model(MODELS / "digits_cnn.h5")
    assert graph.node("residual").args == [[TensorRef("conv1"), TensorRef("conv3")]]


def test_sequential_keras3_and_branching_models_round_trip(tmp_path):
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="d1"),
                            keras.layers.Dense(2, name="d2")])
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    for model, data in [(seq, x), (branching_model(), branching_inputs())]:
        path = tmp_path / f"{model.name}.h5"
        model.save(path)
        rebuilt = build_model(read_model(path))
        got_all, want_all = rebuilt.predict(data, verbose=0), model.predict(data, verbose=0)
        if not isinstance(want_all, list):
            got_all, want_all = [got_all], [want_all]
        for got, want in zip(got_all, want_all, strict=True):
            np.testing.assert_array_equal(got, want)


def test_graph_from_live_model_keeps_weights():
    model = branching_model()
    graph = graph_from_model(model)
    assert set(graph.consumers("stem")) == {"branch_a", "branch_b", "add"}
    rebuilt = build_model(graph)
    data = branching_inputs()
    for got, want in zip(rebuilt.predict(data, verbose=0), model.predict(data, verbose=0),
                         strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("maker, message", [
    (lambda p: p.write_text("not a model"), "neither an HDF5"),
    (lambda p: None, "not found"),
])
def test_bad_files(tmp_path, maker, message):
    path = tmp_path / "bad.h5"
    maker(path)
    with pytest.raises(UserError, match=message):
        read_model(path)


def test_weights_only_file_is_refused():
    with pytest.raises(UserError, match="no model config"):
        read_model(FIXTURES / "keras2_weights_only.h5")
