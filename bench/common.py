"""Shared pieces of the benchmarks: a ResNet-style CIFAR-size CNN and a fair timer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def resnet_cifar(blocks_per_stage: int = 2, seed: int = 0) -> keras.Model:
    """A ResNet-style CNN for 32x32x3 inputs (3 stages, 16/32/64 filters), random weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same",
                                    name=f"{name}_conv1")(x)
            y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
            y = keras.layers.ReLU(name=f"{name}_relu1")(y)
            y = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
            y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
            if stride != 1 or x.shape[-1] != filters:
                x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_proj")(x)
            x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet_cifar")


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of `repeats` calls (the least disturbed run on a noisy machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, repeats: int
                ) -> dict[str, float]:
    """Time several functions in alternation so machine noise hits them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], best_of(fn, repeats))
    return best


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)).astype("float32")
