"""A spiking Keras model as the chain of layers that the fault-campaign engine runs."""

from __future__ import annotations

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.snn.layers import LIF


class SpikingNetwork:
    """Layer chain of a spiking Keras model, with what the engine needs to know per layer."""

    def __init__(self, model: keras.Model):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UserError("SNN campaigns need a model with one input and one output")
        self.model = model
        self.layers = [net_layer for net_layer in model.layers
                       if not isinstance(net_layer, keras.layers.InputLayer)]
        prev = model.inputs[0]
        for net_layer in self.layers:  # a chain: each layer consumes the previous output
            ins = net_layer._inbound_nodes[0].input_tensors if net_layer._inbound_nodes else []
            if len(ins) != 1 or ins[0] is not prev:
                raise UserError(f"layer {net_layer.name!r} is not part of a simple chain; SNN campaigns "
                                "support chain models such as those built by snn.unroll")
            prev = net_layer._inbound_nodes[0].output_tensors[0]
            if isinstance(net_layer, LIF) and net_layer.return_membrane:
                raise UserError(f"LIF {net_layer.name!r} returns its membrane; use a Readout instead")
        self.index = {net_layer.name: i for i, net_layer in enumerate(self.layers)}
        self.time_steps = int(model.inputs[0].shape[1])

    def layer(self, name: str):
        if name not in self.index:
            raise UserError(f"no layer {name!r} in the model; layers: {', '.join(self.index)}")
        return self.layers[self.index[name]]

    @staticmethod
    def synapse_core(net_layer):
        inner = net_layer.layer if isinstance(net_layer, keras.layers.TimeDistributed) else net_layer
        if isinstance(inner, (keras.layers.Dense, keras.layers.Conv2D)):
            return inner
        return None

    def site_shape(self, name: str, kind: str) -> tuple[int, ...]:
        net_layer = self.layer(name)
        if kind == "synapse":
            core = self.synapse_core(net_layer)
            if core is None:
                raise UserError(f"synapse faults need a Dense or Conv2D layer; {name!r} is "
                                f"{type(net_layer).__name__}")
            return tuple(int(d) for d in core.kernel.shape)
        if not isinstance(net_layer, LIF):
            raise UserError(f"neuron faults need a LIF layer; {name!r} is {type(net_layer).__name__}")
        return tuple(int(d) for d in net_layer.beta.shape)

    def kernel(self, name: str) -> np.ndarray:
        return np.asarray(self.synapse_core(self.layer(name)).kernel.numpy())
