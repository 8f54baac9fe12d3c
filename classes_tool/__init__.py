"""classes-tool: error simulation for trained Keras/TensorFlow networks.

Importing the package registers its Keras layers, so patched model files load with plain
`keras.models.load_model`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

from classes_tool.tf_startup import import_tensorflow  # noqa: E402  (after the environment)

import_tensorflow()  # first, and without the lines it prints while it loads

from classes_tool.simulator.layer import (  # noqa: E402
    ErrorSimulator,
    set_injection,
    set_sites,
    simulators,
)

__all__ = ["ErrorSimulator", "set_injection", "set_sites", "simulators"]
__version__ = "0.1.0"

# Register the layers of every target, so any file this tool writes loads after
# `import classes_tool` (converted ONNX models, SNNs, systolic and fault-injection layers).
from classes_tool.convert import layers as _convert_layers  # noqa: E402, F401
from classes_tool.quant import layers as _quant_layers  # noqa: E402, F401
from classes_tool.snn import layers as _snn_layers  # noqa: E402, F401
from classes_tool.systolic import layers as _systolic_layers  # noqa: E402, F401
