"""Small members of the keras.applications families, built by Keras 3 or by legacy tf_keras.

Each family is built with its own application code (the same blocks, names and layer classes
as the published architecture), made small so the test matrix stays fast: a width multiplier
(alpha) or the family's own size knobs (blocks per stage, channels), small inputs and 10
classes. Inception V3, InceptionResNetV2, Xception and VGG16 have no size knobs: their
convolutions and dense layers are built with an eighth of the filters (`_narrowed`).

`src` is "keras" (Keras 3) or "tf_keras" (legacy Keras 2, used once to write the committed
fixtures by `tests/fixtures/make_keras2_applications.py`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np

NARROW = 8
CLASSES = 10

# family -> (input shape, needs tf_keras: the family exists in legacy Keras only)
FAMILIES: dict[str, tuple[tuple[int, int, int], bool]] = {
    "mobilenet": ((32, 32, 3), False),
    "mobilenet_v2": ((32, 32, 3), False),
    "mobilenet_v3": ((32, 32, 3), False),
    "efficientnet": ((32, 32, 3), False),
    "efficientnet_v2": ((32, 32, 3), False),
    "densenet": ((32, 32, 3), False),
    "resnet": ((32, 32, 3), False),
    "resnet_v2": ((32, 32, 3), False),
    "inception_v3": ((75, 75, 3), False),
    "inception_resnet_v2": ((75, 75, 3), False),
    "xception": ((71, 71, 3), False),
    "nasnet": ((32, 32, 3), False),
    "convnext": ((32, 32, 3), False),
    "regnet": ((32, 32, 3), True),
    "vgg16": ((32, 32, 3), False),
}

def _module(src: str, name: str) -> Any:
    return importlib.import_module(f"{src}.src.applications.{name}")

class _NarrowLayers:
    """The `layers` module as an application sees it, with fewer filters per Conv/Dense."""

    def __init__(self, layers: Any):
        self._layers = layers

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._layers, name)
        if name not in ("Conv2D", "SeparableConv2D", "Dense"):
            return real

        def make(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("name") != "predictions":
                if args:
                    args = (max(1, args[0] // NARROW), *args[1:])
                else:
                    key = "units" if "units" in kwargs else "filters"
                    kwargs[key] = max(1, kwargs[key] // NARROW)
            return real(*args, **kwargs)

        return make

@contextlib.contextmanager
def _narrowed(module: Any) -> Iterator[None]:
    saved = {"layers": module.layers}
    module.layers = _NarrowLayers(module.layers)
    if hasattr(module, "inception_resnet_block"):
        # the residual up-projection takes its filters from the (already narrowed) shape
        conv2d_bn = saved["conv2d_bn"] = module.conv2d_bn

        def conv_bn(x: Any, filters: int, *args: Any, **kwargs: Any) -> Any:
            if "activation" in kwargs and kwargs["activation"] is None:
                filters *= NARROW
            return conv2d_bn(x, filters, *args, **kwargs)

        module.conv2d_bn = conv_bn
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(module, key, value)

def _resnet(src: str, v2: bool) -> Any:
    mod = _module(src, "resnet")
    if src == "keras":
        stack = mod.stack_residual_blocks_v2 if v2 else mod.stack_residual_blocks_v1
    else:
        stack = mod.stack2 if v2 else mod.stack1

    def stack_fn(x: Any) -> Any:
        x = stack(x, 8, 2 if v2 else 1, stride1=2 if v2 else 1, name="conv2")
        return stack(x, 16, 2 if v2 else 1, stride1=1 if v2 else 2, name="conv3")

    return mod.ResNet(stack_fn, v2, True, **_common(input_shape=FAMILIES["resnet"][0]))

def _common(**extra: Any) -> dict[str, Any]:
    return {"weights": None, "classes": CLASSES, "classifier_activation": None, **extra}

def build(family: str, src: str = "keras") -> Any:
    """A small, randomly initialised model of `family` (weights not yet randomised)."""
    shape, _ = FAMILIES[family]
    common = _common(input_shape=shape)
    if family == "mobilenet":
        return _module(src, "mobilenet").MobileNet(alpha=0.25, **common)
    if family == "mobilenet_v2":
        return _module(src, "mobilenet_v2").MobileNetV2(alpha=0.35, **common)
    if family == "mobilenet_v3":
        return _module(src, "mobilenet_v3").MobileNetV3Small(alpha=0.75, **common)
    if family == "efficientnet":
        return _module(src, "efficientnet").EfficientNet(0.25, 0.25, shape[0], **common)
    if family == "efficientnet_v2":
        mod = _module(src, "efficientnet_v2")
        key = "name" if src == "keras" else "model_name"
        return mod.EfficientNetV2(0.25, 0.25, shape[0], **{key: "efficientnetv2-b0"}, **common)
    if family == "densenet":
        return _module(src, "densenet").DenseNet([1, 2, 2, 1], **common)
    if family in ("resnet", "resnet_v2"):
        return _resnet(src, family == "resnet_v2")
    if family == "nasnet":
        return _module(src, "nasnet").NASNet(penultimate_filters=96, num_blocks=1,
                                             stem_block_filters=8, **common)
    if family == "convnext":
        return _module(src, "convnext").ConvNeXt(depths=[1, 1, 2, 1],
                                                 projection_dims=[8, 16, 24, 32],
                                                 default_size=shape[0], **common)
    if family == "regnet":
        return _module(src, "regnet").RegNet(depths=[1, 1, 2, 1], widths=[8, 16, 24, 32],
                                             group_width=8, block_type="X",
                                             default_size=shape[0], **common)
    names = {"inception_v3": ("inception_v3", "InceptionV3"),
             "inception_resnet_v2": ("inception_resnet_v2", "InceptionResNetV2"),
             "xception": ("xception", "Xception"), "vgg16": ("vgg16", "VGG16")}
    module_name, function = names[family]
    mod = _module(src, module_name)
    with _narrowed(mod):
        if src == "tf_keras" and family == "inception_resnet_v2":
            # it sets the module's `layers` from this argument (None until first called)
            common["layers"] = _NarrowLayers(importlib.import_module("tf_keras.layers"))
        return getattr(mod, function)(**common)

def randomize(model: Any, seed: int) -> None:
    """Give every weight a non-default value (batch-norm and normalization statistics too, so
    reading them wrongly shows). Kernels take five values per layer (-2..2 times a power of two
    near their initial spread) and the rest are rounded to 1/64, so the files compress well."""
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        values = []
        for var, value in zip(layer.weights, layer.get_weights(), strict=True):
            name = var.name.split("/")[-1].split(":")[0]
            if not np.issubdtype(value.dtype, np.floating):
                values.append(value)
                continue
            if "variance" in name:
                new = np.round(rng.uniform(0.5, 2.0, value.shape) * 64) / 64
            elif "mean" in name:
                new = np.round(rng.normal(0.0, 0.3, value.shape) * 64) / 64
            elif name == "gamma":
                new = np.round(rng.uniform(0.6, 1.4, value.shape) * 64) / 64
            elif name in ("beta", "bias") or value.size < 64:
                new = np.round(rng.normal(0.0, 0.1, value.shape) * 64) / 64
            else:
                spread = float(np.std(value)) or 0.05
                step = 2.0 ** np.round(np.log2(spread))
                new = step * rng.integers(-2, 3, value.shape)
            values.append(new.astype(value.dtype))
        if values:
            layer.set_weights(values)


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return out

def inputs(family: str, n: int = 4, seed: int = 0) -> np.ndarray:
    shape, _ = FAMILIES[family]
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1.0, 1.0, (n, *shape)) * 64).astype("float32") / 64

def families(src: str) -> list[str]:
    return [f for f, (_, legacy_only) in FAMILIES.items() if src == "tf_keras" or
            not legacy_only]
