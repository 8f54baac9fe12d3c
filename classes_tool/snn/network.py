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
        self.layers = [ly for ly in model.layers if not isinstance(ly, keras.layers.InputLayer)]
        prev = model.inputs[0]
        for ly in self.layers:  # a chain: each layer consumes the previous output
            ins = ly._inbound_nodes[0].input_tensors if ly._inbound_nodes else []
            if len(ins) != 1 or ins[0] is not prev:
                raise UserError(f"layer {ly.name!r} is not part of a simple chain; SNN campaigns "
                                "support chain models such as those built by snn.unroll")
            prev = ly._inbound_nodes[0].output_tensors[0]
            if isinstance(ly, LIF) and ly.return_membrane:
                raise UserError(f"LIF {ly.name!r} returns its membrane; use a Readout instead")
        self.index = {ly.name: i for i, ly in enumerate(self.layers)}
        self.time_steps = int(model.inputs[0].shape[1])

    def layer(self, name: str):
        if name not in self.index:
            raise UserError(f"no layer {name!r} in the model; layers: {', '.join(self.index)}")
        return self.layers[self.index[name]]

    @staticmethod
    def synapse_core(ly):
        inner = ly.layer if isinstance(ly, keras.layers.TimeDistributed) else ly
        if isinstance(inner, (keras.layers.Dense, keras.layers.Conv2D)):
            return inner
        return None

    def site_shape(self, name: str, kind: str) -> tuple[int, ...]:
        ly = self.layer(name)
        if kind == "synapse":
            core = self.synapse_core(ly)
            if core is None:
                raise UserError(f"synapse faults need a Dense or Conv2D layer; {name!r} is "
                                f"{type(ly).__name__}")
            return tuple(int(d) for d in core.kernel.shape)
        if not isinstance(ly, LIF):
            raise UserError(f"neuron faults need a LIF layer; {name!r} is {type(ly).__name__}")
        return tuple(int(d) for d in ly.beta.shape)

    def kernel(self, name: str) -> np.ndarray:
        return np.asarray(self.synapse_core(self.layer(name)).kernel.numpy())
