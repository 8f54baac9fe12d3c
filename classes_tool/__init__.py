"""classes-tool: error simulation for trained Keras/TensorFlow networks.

Importing the package registers its Keras layers, so patched model files load with plain
`keras.models.load_model`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

from classes_tool.simulator.layer import (  # noqa: E402  (after the environment)
    ErrorSimulator,
    set_injection,
    set_sites,
    simulators,
)

__all__ = ["ErrorSimulator", "set_injection", "set_sites", "simulators"]
__version__ = "0.1.0"
