"""Spiking neural network target: LIF layers unrolled over time, fault models and campaigns.

Importing this package registers the spiking layers, so saved SNN models load with
`keras.models.load_model`.
"""

from classes_tool.snn.campaign import SpikingCampaign
from classes_tool.snn.faults import (
    DeadNeuron,
    DeadSynapse,
    Fault,
    FaultModel,
    MembraneBitFlip,
    MembraneStuck,
    ParametricNeuron,
    PerturbedSynapse,
    RandomNeuron,
    SaturatedNeuron,
    SaturatedSynapse,
    SpikeFlip,
    StuckNeuron,
    StuckSynapse,
    SynapseBitFlip,
)
from classes_tool.snn.layers import (
    LIF,
    Readout,
    latency_encode,
    lif_dynamics,
    rate_encode,
    repeat_encode,
    spike_function,
    unroll,
)

__all__ = [
    "SpikingCampaign",
    "DeadNeuron",
    "DeadSynapse",
    "Fault",
    "FaultModel",
    "MembraneBitFlip",
    "MembraneStuck",
    "ParametricNeuron",
    "PerturbedSynapse",
    "RandomNeuron",
    "SaturatedNeuron",
    "SaturatedSynapse",
    "SpikeFlip",
    "StuckNeuron",
    "StuckSynapse",
    "SynapseBitFlip",
    "LIF",
    "Readout",
    "latency_encode",
    "lif_dynamics",
    "rate_encode",
    "repeat_encode",
    "spike_function",
    "unroll",
]
