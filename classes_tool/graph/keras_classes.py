"""Find the Keras class a config names when the config does not say where it lives.

Keras 2 files and Keras 3 `.h5` files store a layer's class name without its module. Keras's
own `.h5` loader looks such a name up among the built-in layers and the registered objects
only, so it misses the layers that live in Keras's own application modules (ConvNeXt's
`LayerScale`, InceptionResNetV2's `CustomScaleLayer`) and cannot load Keras's own `.h5` files
of those models. Here the whole of Keras is searched: its layers and models, its registered
objects, and every layer class its modules define. The application layers are also registered
under their plain class names, so a file this tool writes loads with `keras.models.load_model`
once `classes_tool` is imported.
"""

from __future__ import annotations

import functools
from typing import Any

import keras

# layers defined by keras.applications modules (not exported, not registered by Keras)
APPLICATION_LAYERS = {
    "LayerScale": "keras.src.applications.convnext",
    "CustomScaleLayer": "keras.src.applications.inception_resnet_v2",
}


def _bare(class_name: str) -> str:
    """'Custom>CustomScaleLayer' (a Keras 2 registered name) -> 'CustomScaleLayer'."""
    return class_name.rsplit(">", 1)[-1]


@functools.cache
def _keras_layer_classes() -> dict[str, list[type]]:
    import keras.applications  # noqa: F401  (defines the application layers)

    found: dict[str, list[type]] = {}
    stack = [keras.layers.Layer]
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            stack.append(sub)
            if sub.__module__.startswith("keras."):
                found.setdefault(sub.__name__, []).append(sub)
    return found


def find_keras_class(class_name: str) -> Any | None:
    """The Keras class called `class_name` (or its bare name), or None."""
    name = _bare(class_name)
    for candidate in (class_name, name):
        obj = keras.saving.get_registered_object(candidate)
        if isinstance(obj, type):
            return obj
    for namespace in (keras.layers, keras.models, keras):
        obj = getattr(namespace, name, None)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            return obj
    classes = _keras_layer_classes().get(name, [])
    return classes[0] if len(classes) == 1 else None


def register_application_layers() -> None:
    """Let Keras's `.h5` loader find the application layers by their plain class names."""
    import importlib

    custom = keras.saving.get_custom_objects()
    for name, module in APPLICATION_LAYERS.items():
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # another Keras version: nothing to register
            continue
        custom.setdefault(name, cls)
