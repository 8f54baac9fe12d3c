"""One test per building block that broke on architectures nobody here wrote (issue 18)."""

import json

import h5py
import keras
import numpy as np
import pytest
from helpers import FIXTURES

from classes_tool import patcher, session
from classes_tool.errors import UserError
from classes_tool.graph import TensorRef, build_model, read_model
from classes_tool.graph.dialects import parse_model_config
from classes_tool.graph.rebuild import unrecognized_kwargs

X4 = np.random.default_rng(0).normal(2.0, 3.0, (6, 4)).astype("float32")


def _same_as_keras(path, x):
    want = np.asarray(keras.models.load_model(path, compile=False)(x))
    got = np.asarray(build_model(read_model(path))(x))
    np.testing.assert_array_equal(got, want)
    return got


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_adapted_normalization_keeps_its_statistics(tmp_path, suffix):
    # A: the weights were assigned but never finalised (mean 0, variance 1 stayed in use)
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(X4)
    model = keras.Model(inp, keras.layers.Dense(3, name="d")(norm(inp)))
    model.save(tmp_path / f"m.{suffix}")
    _same_as_keras(tmp_path / f"m.{suffix}", X4)


def _ops_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((4,), name="inp")
    a = keras.layers.Dense(4, name="a")(inp)
    b = keras.layers.Dense(4, name="b")(inp)
    h = (a + 3.0) * (1.0 / 6.0)
    h = 2.0 - h
    h = h - b
    h = h / 4.0
    h = keras.ops.relu(h) + a * b
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_keras3_operation_nodes_become_layers(tmp_path, suffix):
    # B: `x + 3.0` is an operation node (class Add, a constant argument), not the merge layer
    model = _ops_model()
    path = tmp_path / f"m.{suffix}"
    model.save(path)
    graph = read_model(path)
    origins = {n.name: (n.class_name, n.origin) for n in graph.nodes if n.origin}
    assert ("Rescaling", "keras.ops.Add") in origins.values()
    assert ("Multiply", "keras.ops.Multiply") in origins.values()
    assert ("Activation", "keras.ops.Relu") in origins.values()
    rebuilt = build_model(graph)
    for name in origins:  # every node is a layer: it can be described and targeted
        rebuilt.get_layer(name)
    np.testing.assert_array_equal(np.asarray(rebuilt(X4)), np.asarray(model(X4)))
    loaded = session.load(path)
    assert session.select_targets(loaded.graph, after_types=["Add"]) == [
        n for n, (cls, _) in origins.items() if cls == "Add"]
    patcher.describe(loaded)


def test_unknown_operation_is_one_line_error_naming_the_node(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.ops.sin(keras.layers.Dense(2, name="d")(inp)))
    model.save(tmp_path / "m.h5")
    with pytest.raises(UserError, match=r"node 'sin' calls keras.ops Sin"):
        read_model(tmp_path / "m.h5")


def test_keras2_operator_layer_with_tensor_and_constant_kwargs():
    # B: Keras 2 stores an operator layer's call flat, tensors inside its kwargs
    config = {"class_name": "Functional", "config": {
        "name": "k2", "input_layers": [["x", 0, 0]], "output_layers": [["sum", 0, 0]],
        "layers": [
            {"class_name": "InputLayer", "name": "x",
             "config": {"name": "x", "batch_input_shape": [None, 4], "dtype": "float32"},
             "inbound_nodes": []},
            {"class_name": "Dense", "name": "skip/bn", "config": {"name": "skip/bn", "units": 4},
             "inbound_nodes": [[["x", 0, 0, {}]]]},
            {"class_name": "TFOpLambda", "name": "tf.__operators__.add",
             "config": {"name": "tf.__operators__.add", "function": "__operators__.add"},
             "inbound_nodes": [["x", 0, 0, {"y": ["skip/bn", 0, 0], "name": None}]]},
            {"class_name": "TFOpLambda", "name": "sum",
             "config": {"name": "sum", "function": "math.multiply"},
             "inbound_nodes": [["tf.__operators__.add", 0, 0, {"y": 0.5, "name": None}]]},
        ]}}
    graph = parse_model_config(config)
    add = graph.node("tf.__operators__.add")
    assert add.class_name == "Add" and add.args == [[TensorRef("x"), TensorRef("skip_bn")]]
    assert graph.node("sum").class_name == "Rescaling"
    assert graph.node("sum").config["scale"] == 0.5
    build_model(graph)


def test_unrecognized_kwargs_keeps_nested_dicts_whole():
    # C: the non-greedy pattern cut the dict at the first '}' and literal_eval raised
    message = ("Unrecognized keyword arguments passed to SeparableConv2D: {'kernel_initializer': "
               "{'class_name': 'GlorotUniform', 'config': {'seed': None}}, 'kernel_constraint': "
               "None}")
    assert unrecognized_kwargs(message) == {
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "kernel_constraint": None}
    assert unrecognized_kwargs("Unrecognized keyword arguments passed to X: {'a': <obj>}") == {}


def test_keras2_slash_names_are_renamed_and_found_by_either_name(tmp_path):
    # D: Keras 3 refuses 'conv1/conv'; the user still finds it by the name in the file
    import sys

    sys.path.insert(0, str(FIXTURES))
    from make_keras2_applications import unpack

    graph = read_model(unpack("densenet", tmp_path))
    node = graph.node("conv1/conv")
    assert node.name == "conv1_conv" and node.source_name == "conv1/conv"
    assert not any("/" in n for n in graph.names())
    assert session.select_targets(graph, after=["conv1/conv"]) == ["conv1_conv"]


def _nested_model():
    keras.utils.set_random_seed(2)
    stem = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same", name="stem_conv"),
                             keras.layers.BatchNormalization(name="stem_bn")], name="stem")
    sub_in = keras.Input((8, 8, 4))
    sub_out = keras.layers.Conv2D(4, 1, name="sub_conv")(sub_in)
    block = keras.Model(sub_in, keras.layers.Add(name="add")([sub_in, sub_out]), name="block")
    inp = keras.Input((8, 8, 3), name="img")
    x = block(stem(inp))
    x = keras.layers.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    bn = model.get_layer("stem").get_layer("stem_bn")
    bn.set_weights([w + 0.3 for w in bn.get_weights()])
    return model


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_nested_models_are_read_and_patched_inside(tmp_path, suffix):
    # E, F: a nested model was a 'shared layer' (Keras 2) or unknown (Keras 3 .h5 'Sequential'),
    # and --after-type Conv2D skipped the layers inside it
    model = _nested_model()
    path = tmp_path / f"m.{suffix}"
    model.save(path)
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    _same_as_keras(path, x)
    loaded = session.load(path)
    assert session.select_targets(loaded.graph, after_types=["Conv2D"]) == [
        "stem_conv", "sub_conv", "head"]
    out = tmp_path / f"p.{suffix}"
    patcher.patch(path, out, after_types=["Conv2D"], sites=8, value_range=(-1.0, 1.0),
                  active=False)
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(out)(x)),
                                  np.asarray(model(x)))


def test_unknown_class_says_how_to_pass_it(tmp_path):
    # F: a class neither Keras nor the user provides
    path = tmp_path / "m.h5"
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2, name="d")(inp)).save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["class_name"] = "NoSuchLayer"
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(UserError, match=r"'NoSuchLayer', which is not a Keras class.*"
                                        r"custom_objects"):
        build_model(read_model(path))
