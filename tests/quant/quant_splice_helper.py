"""A deliberately small stand-in for the graph patcher, used only by the quant tests.

It rebuilds a single-input functional model layer by layer (copying weights) and inserts
`make_layer(name, shape)` after the named layers, rewiring every consumer.
"""

import keras


def insert_after(model, node_names, make_layer):
    src = model.inputs[0]
    inp = keras.Input(shape=tuple(src.shape[1:]), name=src.name)
    tensors = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            tensors[layer.name] = inp
            continue
        parents = [t._keras_history[0].name for t in layer._inbound_nodes[0].input_tensors]
        args = [tensors[p] for p in parents]
        clone = layer.__class__.from_config(layer.get_config())
        out = clone(args[0] if len(args) == 1 else args)
        clone.set_weights(layer.get_weights())
        if layer.name in node_names:
            out = make_layer(layer.name, tuple(out.shape))(out)
        tensors[layer.name] = out
    return keras.Model(inp, tensors[model.outputs[0]._keras_history[0].name])
