"""Splicing a layer after nodes rewires every consumer and the model outputs."""

import keras
import numpy as np
from helpers import branching_inputs, branching_model

from classes_tool.graph import graph_from_model, insert_after


def _scale(name, shape):
    return keras.layers.Rescaling(2.0, name=f"{name}_x2")


def test_insert_after_node_with_three_consumers():
    model = branching_model()
    patched = insert_after(model, ["stem"], _scale)
    graph = graph_from_model(patched)
    assert graph.consumers("stem") == ["stem_x2"]
    assert sorted(graph.consumers("stem_x2")) == ["add", "branch_a", "branch_b"]
    # Every original weight is carried over.
    for layer in model.layers:
        for a, b in zip(layer.get_weights(), patched.get_layer(layer.name).get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    # Doubling the stem is observable: the patched model computes something else.
    data = branching_inputs()
    assert not np.allclose(patched.predict(data, verbose=0)[1], model.predict(data, verbose=0)[1])


def test_insert_after_output_node_rewires_model_output():
    model = branching_model()
    patched = insert_after(model, ["value"], _scale)
    data = branching_inputs()
    probs, value = patched.predict(data, verbose=0)
    ref_probs, ref_value = model.predict(data, verbose=0)
    np.testing.assert_array_equal(probs, ref_probs)
    np.testing.assert_allclose(value, 2 * ref_value, rtol=1e-6)
