"""Train the shipped example: a small residual CNN on scikit-learn's bundled 8x8 digits.

Why this model: it is real data available offline, trains in seconds on a CPU, and its graph has
what the patcher must handle (several Conv2D, a branch with two consumers, an Add merge, pooling,
Dense head). Run from the repository root:

    python models/train_digits_cnn.py

It writes models/digits_cnn.h5, models/digits_cnn.keras, models/digits_train.npz and
models/digits_test.npz (x: (N, 8, 8, 1) float32 in [0, 1], y: (N,) int64).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1234


def build_model() -> keras.Model:
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv4")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="fc2")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def main() -> None:
    keras.utils.set_random_seed(SEED)
    digits = load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=40, batch_size=64, verbose=0,
              validation_data=(x_test, y_test))
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {acc:.4f} on {len(x_test)} held-out digits")
    model.save(HERE / "digits_cnn.h5")
    model.save(HERE / "digits_cnn.keras")
    np.savez_compressed(HERE / "digits_train.npz", x=x_train, y=y_train)
    np.savez_compressed(HERE / "digits_test.npz", x=x_test, y=y_test)


if __name__ == "__main__":
    main()
