"""classes-tool: error simulation for trained Keras/TensorFlow networks.

`import classes_tool` is cheap: it does not load TensorFlow. It does make sure that the tool's
Keras layers are registered by the time Keras is loaded (see `classes_tool.registration`), so
patched model files load with plain `keras.models.load_model` after `import classes_tool`.
The names below load TensorFlow when first used.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

from classes_tool.registration import register_when_keras_loads  # noqa: E402

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first use, PEP 562)
_LAZY = {
    "ErrorSimulator": "classes_tool.simulator.layer",
    "set_injection": "classes_tool.simulator.layer",
    "set_sites": "classes_tool.simulator.layer",
    "simulators": "classes_tool.simulator.layer",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'classes_tool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_when_keras_loads()
