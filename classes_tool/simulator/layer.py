"""The `ErrorSimulator` Keras layer: replaces a few positions of a tensor by faulty values.

Why it looks like this:
- Injection sites are pre-generated (see `sites.py`) and stored *ragged* as three non-trainable
  weights: `positions` (flat indices into one sample's tensor), `values` (what to write there) and
  `splits` (site i owns entries splits[i]:splits[i+1]). They live in the weights section of the
  model file, so 1000 sites after every convolution keep the config tiny and the file small.
- At call time each sample of the batch gets its own site, drawn at random (mode 1) or taken from
  a caller-given list (mode 2), and the layer writes that site's values with one vectorised
  scatter: no Python loop over the batch, no `py_function`, no NumPy. It runs under `tf.function`
  and with `jit_compile=True` (XLA), on tensors of any rank.
- Mode 0 returns the input untouched (bit-identical golden behaviour). The mode is a variable, so
  switching works after the model was traced.
- The write itself is `classes_tool.simulator.write`, the one injection mechanism: campaigns
  call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from classes_tool.simulator.write import apply_sites

MODE_OFF = 0
MODE_RANDOM = 1
MODE_FORCED = 2


@keras.saving.register_keras_serializable(package="classes_tool")
class ErrorSimulator(keras.layers.Layer):
    """Injects one pre-generated error site per sample into the tensor flowing through it.

    Args:
        num_sites: how many sites the layer carries.
        total_positions: sum of the sites' sizes (length of the ragged `positions`/`values`).
        max_positions: size of the largest site (static window width, XLA needs it).
        mode: initial mode: 0 off, 1 random site per sample, 2 caller-given sites.
        inject_in_training: inject also when called with `training=True` (default: no).
        forced_capacity: how many caller-given site ids the layer can hold (mode 2).
        seed: seed of the per-sample random site draw (mode 1).
        target: name of the node this layer follows (for reports).
        error_model: name of the error model the sites were drawn from (for reports).
    """

    def __init__(self, num_sites: int, total_positions: int, max_positions: int,
                 mode: int = MODE_RANDOM, inject_in_training: bool = False,
                 forced_capacity: int = 4096, seed: int = 0, target: str = "",
                 error_model: str = "", **kwargs):
        super().__init__(**kwargs)
        self.num_sites = int(num_sites)
        self.total_positions = int(total_positions)
        self.max_positions = int(max_positions)
        self.initial_mode = int(mode)
        self.inject_in_training = bool(inject_in_training)
        self.forced_capacity = int(forced_capacity)
        self.seed = int(seed)
        self.target = target
        self.error_model = error_model
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.supports_masking = True

    def build(self, input_shape):
        if any(d is None for d in input_shape[1:]):
            raise ValueError(f"ErrorSimulator needs a fully known sample shape, got {input_shape}")
        self.positions = self.add_weight(name="positions", shape=(max(self.total_positions, 1),),
                                         dtype="int32", initializer="zeros", trainable=False)
        self.values = self.add_weight(name="values", shape=(max(self.total_positions, 1),),
                                      dtype="float32", initializer="zeros", trainable=False)
        self.splits = self.add_weight(name="splits", shape=(self.num_sites + 1,), dtype="int32",
                                      initializer="zeros", trainable=False)
        self.mode = self.add_weight(name="mode", shape=(), dtype="int32", trainable=False,
                                    initializer=keras.initializers.Constant(self.initial_mode))
        self.forced_sites = self.add_weight(
            name="forced_sites", shape=(self.forced_capacity,), dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(-1))

    def call(self, inputs, training=None):
        if training and not self.inject_in_training:
            return inputs
        if self.num_sites == 0:
            return inputs
        mode = tf.convert_to_tensor(self.mode)

        def inject():
            batch = tf.shape(inputs)[0]
            drawn = keras.random.randint((batch,), 0, self.num_sites, seed=self.seed_generator,
                                         dtype="int32")
            forced = tf.gather(tf.convert_to_tensor(self.forced_sites),
                               tf.range(batch) % self.forced_capacity)
            forced = tf.where(forced < self.num_sites, forced, -1)
            ids = tf.where(mode == MODE_FORCED, forced, drawn)
            return apply_sites(inputs, ids, tf.convert_to_tensor(self.positions),
                               tf.convert_to_tensor(self.values),
                               tf.convert_to_tensor(self.splits), self.max_positions)

        return tf.cond(mode > 0, inject, lambda: tf.identity(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_sites(self, positions: np.ndarray, values: np.ndarray, splits: np.ndarray) -> None:
        """Fill the layer's site weights (shapes must match the config it was built with)."""
        positions = np.asarray(positions, dtype=np.int32)
        values = np.asarray(values, dtype=np.float32)
        splits = np.asarray(splits, dtype=np.int32)
        if len(splits) != self.num_sites + 1 or len(positions) != self.total_positions:
            raise ValueError("site arrays do not match the layer's num_sites/total_positions")
        pad = max(self.total_positions, 1) - len(positions)
        self.positions.assign(np.concatenate([positions, np.zeros(pad, np.int32)]))
        self.values.assign(np.concatenate([values, np.zeros(pad, np.float32)]))
        self.splits.assign(splits)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_sites": self.num_sites, "total_positions": self.total_positions,
            "max_positions": self.max_positions, "mode": self.initial_mode,
            "inject_in_training": self.inject_in_training,
            "forced_capacity": self.forced_capacity, "seed": self.seed,
            "target": self.target, "error_model": self.error_model,
        })
        return config


def simulators(model: keras.Model) -> list[ErrorSimulator]:
    """All `ErrorSimulator` layers of a model, in layer order (nested models included)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, ErrorSimulator):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(simulators(layer))
    return found


def _select(model: keras.Model, names: Iterable[str] | None) -> list[ErrorSimulator]:
    layers = simulators(model)
    if not layers:  # a call on the original model instead of the patched one does nothing
        raise ValueError(f"model '{model.name}' has no ErrorSimulator layer: load the patched "
                         "model (classes-tool patch)")
    if names is None:
        return layers
    wanted = set(names)
    chosen = [s for s in layers if s.name in wanted or s.target in wanted]
    missing = wanted - {s.name for s in chosen} - {s.target for s in chosen}
    if missing:
        raise KeyError(f"no ErrorSimulator named or following {sorted(missing)}")
    return chosen


def set_injection(model: keras.Model, enabled: bool, layers: Iterable[str] | None = None) -> None:
    """Turn injection on (a random site per sample) or off (golden) in a patched model."""
    if not isinstance(enabled, (bool, np.bool_)):  # "no" or 0.5 would read as on
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    for layer in _select(model, layers):
        layer.mode.assign(MODE_RANDOM if enabled else MODE_OFF)


def set_sites(model: keras.Model, site_ids: Sequence[int], layers: Iterable[str] | None = None
              ) -> None:
    """Make sample b of the next batches get site `site_ids[b]` (-1: no injection for it)."""
    given = np.asarray(site_ids)
    if given.ndim != 1 or len(given) == 0 or given.dtype.kind not in "iu":
        raise ValueError(f"site ids must be a non-empty list of integers, got {site_ids!r}")
    chosen = _select(model, layers)
    for layer in chosen:  # an id past the sites would silently mean "no fault"
        if given.min() < -1 or given.max() >= layer.num_sites:
            raise ValueError(f"site ids must lie in [-1, {layer.num_sites - 1}] for {layer.name} "
                             f"({layer.num_sites} sites), got {given.min()}..{given.max()}")
    given = given.astype(np.int32)  # in range of every chosen layer, so int32 holds it
    for layer in chosen:
        ids = np.full(layer.forced_capacity, -1, dtype=np.int32)
        if len(given) > layer.forced_capacity:
            raise ValueError(f"{len(given)} site ids exceed forced_capacity "
                             f"{layer.forced_capacity} of {layer.name}")
        ids[: len(given)] = given
        layer.forced_sites.assign(ids)
        layer.mode.assign(MODE_FORCED)
