"""classes-tool: error simulation for trained Keras/TensorFlow networks.

Importing the package registers its Keras layers, so patched model files load with plain
`keras.models.load_model`.
"""

from classes_tool.simulator.layer import ErrorSimulator, set_injection, set_sites, simulators

__all__ = ["ErrorSimulator", "set_injection", "set_sites", "simulators"]
__version__ = "0.1.0"
