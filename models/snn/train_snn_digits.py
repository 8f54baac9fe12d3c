"""Train the shipped spiking CNN on scikit-learn's 8x8 digits, rate-encoded over time.

Why: SNN fault campaigns need a real trained network to be meaningful; this script makes it
reproducible from offline data in a few minutes on two CPU cores.

    python models/snn/train_snn_digits.py [--epochs 20] [--out models/snn]

Writes snn_digits.h5, snn_digits.keras and snn_digits_test.npz (rate-encoded test spikes `x`
(N, T, 8, 8, 1) float32 and labels `y`) and prints the test accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from classes_tool.files import atomic_path  # noqa: E402
from classes_tool.snn import LIF, rate_encode, unroll  # noqa: E402

TIME_STEPS = 16


def build(time_steps: int = TIME_STEPS) -> keras.Model:
    """Conv(8) -> LIF -> pool -> Conv(16) -> LIF -> pool -> Dense(10) -> LIF -> spike counts."""
    layers = [
        keras.layers.Conv2D(8, 3, padding="same", name="conv1"),
        LIF(beta=0.9, threshold=1.0, name="lif1"),
        keras.layers.AveragePooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", name="conv2"),
        LIF(beta=0.9, threshold=1.0, name="lif2"),
        keras.layers.AveragePooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="fc"),
        LIF(beta=0.9, threshold=1.0, name="lif_out"),
    ]
    return unroll(layers, (time_steps, 8, 8, 1), readout="count", name="snn_digits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    s_tr = rate_encode(x_tr, TIME_STEPS, seed=1)
    s_te = rate_encode(x_te, TIME_STEPS, seed=2)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(s_tr, y_tr, batch_size=64, epochs=args.epochs, verbose=2,
              validation_data=(s_te, y_te))
    acc = float(np.mean(np.argmax(model.predict(s_te, verbose=0), axis=1) == y_te))
    out = Path(args.out)
    for suffix in (".h5", ".keras"):
        with atomic_path(out / f"snn_digits{suffix}") as tmp:
            model.save(tmp)
    with atomic_path(out / "snn_digits_test.npz") as tmp:
        np.savez_compressed(tmp, x=s_te, y=y_te)
    print(f"test accuracy: {acc:.4f} ({len(y_te)} samples, T={TIME_STEPS})")


if __name__ == "__main__":
    main()
