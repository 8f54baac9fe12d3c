"""Registering the tool's Keras layers, so files it writes load with plain `load_model`.

Keras finds a custom layer of a saved file only if its class was registered
(`keras.saving.register_keras_serializable`) before the file is loaded, and a class registers
when its module is imported. Those modules import TensorFlow, which takes seconds, so the
package root does not import them: it calls `register_when_keras_loads`, which registers them at
once if Keras is already loaded, and otherwise right after the process first imports Keras. A
user's `import classes_tool` followed by `keras.models.load_model(...)` (or
`tf.keras.models.load_model`) therefore finds every layer, and `import classes_tool` alone stays
free of TensorFlow. The tool's own loading code calls `register_layers` explicitly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: Every module that defines a layer a written file may hold.
LAYER_MODULES = (
    "classes_tool.simulator.layer",  # ErrorSimulator
    "classes_tool.convert.layers",  # layers of converted ONNX models
    "classes_tool.quant.layers",  # quantized activations
    "classes_tool.snn.layers",  # spiking layers
    "classes_tool.systolic.layers",  # systolic-array layers
    "classes_tool.graph.rebuild",  # operator layers of rebuilt Keras graphs
)


_state = {"registered": False, "importing": 0}


def register_layers() -> None:
    """Import every layer module (registering its classes); cheap after the first call."""
    from classes_tool.tf_startup import import_tensorflow

    import_tensorflow()  # without TensorFlow's start-up lines where it is not loaded yet
    for name in LAYER_MODULES:
        importlib.import_module(name)
    _state["registered"] = True


def _loaded(name: str) -> bool:
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


def _register_if_due() -> None:
    """Register once Keras is loaded and none of our own modules is half imported.

    The layer modules import other modules of this package; imported while one of those is
    half done (it imported Keras, which brought us here), they would find it without the
    names it has yet to define. So a registration that falls due inside our own import waits
    for the outermost of our modules to finish."""
    if not _state["registered"] and not _state["importing"] and _loaded("keras"):
        register_layers()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of `keras` and of our own modules (see
    `_WatchingLoader`)."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - the finder protocol
        if fullname != "keras" and not fullname.startswith("classes_tool."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchingLoader(spec.loader, fullname != "keras")
                return spec
        return None


class _WatchingLoader(importlib.abc.Loader):
    """The real loader, then a registration if one fell due (`_register_if_due`)."""

    def __init__(self, loader: importlib.abc.Loader, ours: bool):
        self._loader, self._ours = loader, ours

    def create_module(self, spec):  # noqa: ANN001
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        _state["importing"] += self._ours
        try:
            self._loader.exec_module(module)
        finally:
            _state["importing"] -= self._ours
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name == "keras":
            spec._initializing = False  # Keras has run whole: it counts as loaded
        _register_if_due()

    def __getattr__(self, name: str):  # resource readers and the like: the real loader's
        return getattr(self._loader, name)


def register_when_keras_loads() -> None:
    """Register now if Keras is loaded, else right after it is (see the module docstring)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    _register_if_due()
