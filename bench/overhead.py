"""Overhead of the ErrorSimulator: patched inference (injection on, one random site per sample
after every Conv2D) versus golden inference of the same ResNet-style CNN, batch 256, CPU.

    python bench/overhead.py            # target: ratio <= 1.10

A second line gives the floor: the same patched model whose every site is one position. With
the native in-place write (`classes-tool build-native`) that is drawing the site and little
else; without it (stock ops, `CLASSES_TOOL_NATIVE=0`) every write copies the whole tensor
(TensorFlow 2.21's CPU TensorScatterUpdate never reuses the tensor's buffer, and an XLA program
cannot write into a buffer it did not allocate). The first line says which write ran.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import interleaved, random_images, resnet_cifar  # noqa: E402

import classes_tool  # noqa: E402
from classes_tool import ErrorSimulator, patcher  # noqa: E402
from classes_tool.simulator import native  # noqa: E402

BATCH = 256
SITES = 1000


def main() -> None:
    model = resnet_cifar()
    x = tf.constant(random_images(BATCH))
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "resnet.h5"
        model.save(original)
        patched_path = Path(tmp) / "patched.h5"
        patcher.patch(original, patched_path, after_types=["Conv2D"], sites=SITES, seed=1,
                      value_range=(-3.0, 3.0))
        golden = keras.models.load_model(original)
        patched = keras.models.load_model(patched_path)
    n_sims = len(classes_tool.simulators(patched))
    classes_tool.set_injection(patched, True)
    golden_fn = tf.function(lambda t: golden(t, training=False))
    patched_fn = tf.function(lambda t: patched(t, training=False))
    floor_model = keras.models.clone_model(patched)
    floor_model.set_weights(patched.get_weights())
    for sim in classes_tool.simulators(floor_model):  # every site: one position, same layers
        positions = np.zeros(sim.total_positions, np.int32)  # arrays keep their size ...
        positions[:sim.num_sites] = np.arange(sim.num_sites) % int(np.prod(sim.output.shape[1:]))
        ErrorSimulator.load_sites(sim, positions, np.full(sim.total_positions, 7.0, np.float32),
                                  np.arange(sim.num_sites + 1, dtype=np.int32))  # ... site i: 1
    classes_tool.set_injection(floor_model, True)
    floor_fn = tf.function(lambda t: floor_model(t, training=False))
    for _ in range(3):  # trace, and let the compiled writes meet their size classes
        golden_fn(x), patched_fn(x), floor_fn(x)
    best = interleaved({"golden": lambda: golden_fn(x).numpy(),
                        "patched": lambda: patched_fn(x).numpy(),
                        "floor": lambda: floor_fn(x).numpy()}, rounds=10, repeats=3)
    ratio = best["patched"] / best["golden"]
    print(f"ResNet-style CNN, batch {BATCH}, {n_sims} ErrorSimulators x {SITES} sites, "
          "injection on (a random site per sample in every one); write: "
          + ("native in place" if native.load() is not None else
             "stock TensorFlow ops (classes-tool build-native not run, or disabled)"))
    print(f"floor (same layers, every site one position): ratio="
          f"{best['floor'] / best['golden']:.3f} ({best['floor'] * 1e3:.1f} ms)")
    print(f"overhead: ratio={ratio:.3f} (baseline golden {best['golden'] * 1e3:.1f} ms, "
          f"ours patched {best['patched'] * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
