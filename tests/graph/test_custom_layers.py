"""Custom layers registered in the user's own script (`module: None` in their config) rebuild."""

import keras
import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.graph import build_model, read_model


@keras.saving.register_keras_serializable(package="UserScript")
class TimesK(keras.layers.Layer):
    """A layer as a user defines it in the script they run (Keras writes its module as None)."""

    __module__ = "__main__"

    def __init__(self, k=2.0, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, x):
        return x * self.k

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="UserScript")
class Rescaling(keras.layers.Layer):
    """A custom layer that shares its class name with a Keras layer."""

    __module__ = "__main__"

    def __init__(self, offset=1.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, x):
        return x + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


CLASSES = {"TimesK": TimesK, "Rescaling": Rescaling}


def _model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((5,), name="inp")
    h = keras.layers.Dense(4, name="d1")(inp)
    h = TimesK(3.0, name="times")(h)
    h = Rescaling(0.5, name="shift")(h)
    out = keras.layers.Dense(2, name="out")(h)
    return keras.Model(inp, out)


@pytest.fixture
def saved(tmp_path):
    model = _model()
    path = tmp_path / "custom.keras"
    model.save(path)
    x = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    return path, x, model.predict(x, verbose=0)


def test_config_names_no_module_but_the_registered_name(saved):
    path, _, _ = saved
    graph = read_model(path)
    node = next(n for n in graph.nodes if n.name == "times")
    assert node.module is None and node.registered_name == "UserScript>TimesK"


@pytest.mark.parametrize("by", ["registered name", "class name"])
def test_rebuilds_with_the_classes_in_custom_objects(saved, monkeypatch, by):
    path, x, want = saved
    registry = keras.saving.get_custom_objects()
    for name in CLASSES:  # another process: the user's classes are not registered there
        monkeypatch.delitem(registry, f"UserScript>{name}")
    custom = {(f"UserScript>{n}" if by == "registered name" else n): c for n, c in CLASSES.items()}
    graph = read_model(path, custom_objects=custom)
    model = build_model(graph, custom_objects=custom)
    assert type(model.get_layer("times")) is TimesK
    assert type(model.get_layer("shift")) is Rescaling  # not Keras' layer of that name
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6)
    with pytest.raises(UserError, match="times|TimesK"):
        build_model(graph)  # without them: a clear error, not a wrong layer


def test_rebuilds_when_the_classes_are_registered_in_this_process(saved):
    path, x, want = saved
    model = build_model(read_model(path))
    assert type(model.get_layer("shift")) is Rescaling
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6)


def test_live_model_with_script_layers_takes_inserted_layers():
    from classes_tool.graph import insert_after

    model = _model()
    patched = insert_after(model, ["times"],
                           lambda name, shape: keras.layers.Identity(name=f"{name}_id"))
    assert [ly.name for ly in patched.layers] == ["inp", "d1", "times", "times_id", "shift", "out"]
    x = np.random.default_rng(1).random((3, 5)).astype(np.float32)
    np.testing.assert_allclose(patched.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
