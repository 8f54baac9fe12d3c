"""The `FaultInjection` Keras layer and `apply_fault_injection`, which splices it into a model.

A `FaultInjection` layer sits after one layer of the model and corrupts a fraction of that
layer's output values with a strategy from `strategies` (on the integer codes of the layer's
quantization grid, or on the float encoding).

Design choices, and why:

* **Position faults.** The fault mask has the shape of one sample's activation (batch dimension
  excluded) and is broadcast over the batch, like a fault in the register or buffer that holds that
  activation on an accelerator. So results never depend on batch size or order.
* **Reproducible from the seed.** Mask and random values are drawn with TF's stateless RNG keyed by
  (seed, layer index, mask id), where mask id = ``epoch // epoch_interval``. The per-step draws
  (is this training step injected? which layer in `mode: layer`?) are keyed by (seed, step) only,
  so every layer of a model agrees on them without sharing state.
* **Mutable without retracing.** Probability, seed, the train/eval switches, the epoch and step
  counters and the statistics are non-trainable weights, so `set_injection` can change them between
  evaluations of one compiled model, and they are saved with it.
* **Straight-through gradient.** Forward: the faulty tensor; backward: identity. Training sees
  the faults without the (zero almost everywhere) gradient of rounding and bit operations.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from classes_tool.errors import UserError
from classes_tool.graph import insert_after as graph_insert_after
from classes_tool.quant.calibration import (
    QuantSpec,
    attached_grid,
    calibrate_ranges,
    fake_quant_layers,
    quant_specs,
)
from classes_tool.quant.config import (
    DEFAULT_LAYER_CLASSES,
    FaultInjectionConfig,
    parse_fault_injection,
)
from classes_tool.quant.strategies import dequantize, get_strategy, quantize

_NOISE_MAX = 2**31 - 1
_STEP_SALT = 0x57E9  # keys the per-step draws, which must not depend on the layer
_MASK_SALT = 0x3A5C  # keys the per-mask draws of evaluation, which must not depend on the layer
_STAT_NAMES = ("seen", "injected", "changed", "nonfinite", "sum_sq_err", "sum_clean_sq",
               "sum_faulty_sq", "sum_dot")


@tf.custom_gradient
def _straight_through(clean: tf.Tensor, faulty: tf.Tensor):
    """Return `faulty`; pass the incoming gradient to `clean` unchanged (STE)."""

    def grad(dy):
        return dy, tf.zeros_like(faulty)

    return tf.identity(faulty), grad


@keras.saving.register_keras_serializable(package="classes_tool")
class FaultInjection(keras.layers.Layer):
    """Corrupt `probability` percent of the activations passing through (see module docstring)."""

    def __init__(self, injection_type: str = "random", probability: float = 1.0, bits: int = 8,
                 signed: bool = False, scale: float = 1.0, bit: int | None = None,
                 stuck_value: int | None = None, seed: int = 0, layer_index: int = 0,
                 num_layers: int = 1, mode: str = "full_model", injection_layer: int = -1,
                 apply_during: str = "train", epoch_interval: int = 1, step_interval: float = 1.0,
                 track_statistics: bool = True, target: str = "", resample: str = "epoch",
                 grid_source: str = "calibration", quantize_all: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.injection_type = injection_type
        self.strategy = get_strategy(injection_type, bit=bit, value=stuck_value)
        self.probability = float(probability)
        self.bits = int(bits)
        self.signed = bool(signed)
        self.scale = float(scale)
        self.bit = bit
        self.stuck_value = stuck_value
        self.seed = int(seed)
        self.layer_index = int(layer_index)
        self.num_layers = int(num_layers)
        self.mode = mode
        self.injection_layer = int(injection_layer)
        self.apply_during = apply_during
        self.epoch_interval = int(epoch_interval)
        self.step_interval = float(step_interval)
        self.track_statistics = bool(track_statistics)
        self.target = target
        self.resample = resample
        self.grid_source = grid_source
        self.quantize_all = bool(quantize_all) and self.strategy.domain == "int"

    def build(self, input_shape):
        def scalar(name, value, dtype):
            return self.add_weight(name=name, shape=(), dtype=dtype, trainable=False,
                                   initializer=keras.initializers.Constant(value))

        self.probability_var = scalar("probability", self.probability / 100.0, "float32")
        self.scale_var = scalar("scale", self.scale, "float32")
        self.seed_var = scalar("seed", self.seed, "int32")
        self.inject_train = scalar("inject_train", float(self.apply_during in ("train", "both")),
                                   "float32")
        self.inject_eval = scalar("inject_eval", float(self.apply_during in ("eval", "both")),
                                  "float32")
        self.epoch_var = scalar("epoch", 0, "int32")
        self.step_var = scalar("step", 0, "int32")
        self.stats = {n: scalar(n, 0.0, "float64") for n in _STAT_NAMES}

    def compute_output_shape(self, input_shape):
        return input_shape

    # ------------------------------------------------------------------ random draws
    def _base_key(self) -> tf.Tensor:
        return tf.stack([tf.cast(self.seed_var, tf.int32), tf.constant(0x5EED, tf.int32)])

    def _mask_id(self) -> tf.Tensor:
        return tf.math.floordiv(tf.cast(self.epoch_var, tf.int32), self.epoch_interval)

    def _mask_key(self) -> tf.Tensor:
        key = tf.random.experimental.stateless_fold_in(self._base_key(), self.layer_index)
        return tf.random.experimental.stateless_fold_in(key, self._mask_id())

    def fault_mask(self, feature_shape, step: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
        """(hit mask, noise) of `feature_shape`; a function of seed, layer, epoch (and `step`)."""
        key = self._mask_key()
        if step is not None:
            key = tf.random.experimental.stateless_fold_in(key, step)
        u = tf.random.stateless_uniform(feature_shape, seed=key, dtype=tf.float32)
        mask = u < tf.cast(self.probability_var, tf.float32)
        noise = tf.random.stateless_uniform(
            feature_shape, seed=tf.random.experimental.stateless_fold_in(key, 1),
            minval=0, maxval=_NOISE_MAX, dtype=tf.int32)
        return mask, noise

    def _gate(self, training: bool) -> tf.Tensor:
        """Scalar 0/1: is this call injected at all (phase, step_interval, layer choice)."""
        gate = self.inject_train if training else self.inject_eval
        gate = tf.cast(gate, tf.float32) > 0.5
        if training:
            step_key = tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(self._base_key(), _STEP_SALT),
                tf.cast(self.step_var, tf.int32))
            if self.step_interval < 1.0:
                u = tf.random.stateless_uniform([], seed=step_key)
                gate = tf.logical_and(gate, u < self.step_interval)
            choice_key = tf.random.experimental.stateless_fold_in(step_key, 1)
        else:  # one choice per mask, keyed without the layer index so all layers agree
            choice_key = tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(self._base_key(), _MASK_SALT),
                self._mask_id())
        if self.mode == "layer":
            if self.injection_layer >= 0:
                chosen = tf.constant(self.injection_layer, tf.int32)
            else:
                u = tf.random.stateless_uniform([], seed=choice_key)
                chosen = tf.minimum(tf.cast(u * self.num_layers, tf.int32), self.num_layers - 1)
            gate = tf.logical_and(gate, tf.equal(chosen, self.layer_index))
        return gate

    # ------------------------------------------------------------------ forward
    def corrupt_all(self, x: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """Every value of `x` corrupted by the strategy (the mask then picks which to keep)."""
        if self.strategy.domain == "int":
            scale = tf.cast(self.scale_var, tf.float32)
            q = quantize(x, scale, self.bits, self.signed)
            return dequantize(self.strategy.corrupt(q, self.bits, self.signed, noise), scale)
        return self.strategy.corrupt(x, self.bits, self.signed, noise)

    def call(self, inputs, training=None):
        training = bool(training)  # Keras passes a Python bool; None means inference
        x = tf.cast(inputs, tf.float32)
        gate = self._gate(training)
        shape = tf.shape(x)
        if training and self.resample == "sample":  # own mask per sample of the batch
            mask, noise = self.fault_mask(shape, tf.cast(self.step_var, tf.int32))
        else:  # position faults, broadcast over the batch
            step = tf.cast(self.step_var, tf.int32) if training and self.resample == "step" else None
            mask, noise = self.fault_mask(shape[1:], step)
            mask = tf.broadcast_to(mask[None], shape)
            noise = tf.broadcast_to(noise[None], shape)
        hit = tf.logical_and(mask, gate)
        if self.quantize_all:  # every value goes through the integer grid, as on the hardware
            scale = tf.cast(self.scale_var, tf.float32)
            x = dequantize(quantize(x, scale, self.bits, self.signed), scale)
        faulty = tf.where(hit, self.corrupt_all(x, noise), x)
        if training:
            self.step_var.assign_add(1)
        if self.track_statistics:
            phase_on = tf.cast(self.inject_train if training else self.inject_eval, tf.float32) > 0.5
            self._update_statistics(x, faulty, hit, phase_on)
        return tf.cast(_straight_through(tf.cast(inputs, tf.float32), faulty), inputs.dtype)

    def _update_statistics(self, clean, faulty, hit, phase_on) -> None:
        on = tf.cast(phase_on, tf.float64)
        finite = tf.math.is_finite(faulty)
        # values whose faulty result is Inf/NaN are left out of RMSE and cosine (both sides)
        c = tf.where(finite, tf.cast(clean, tf.float64), 0.0)
        f = tf.where(finite, tf.cast(faulty, tf.float64), 0.0)
        count = lambda t: tf.reduce_sum(tf.cast(t, tf.float64)) * on  # noqa: E731
        total = lambda t: tf.reduce_sum(t) * on  # noqa: E731
        self.stats["seen"].assign_add(tf.cast(tf.size(clean), tf.float64) * on)
        self.stats["injected"].assign_add(count(hit))
        self.stats["changed"].assign_add(count(tf.logical_or(tf.not_equal(faulty, clean),
                                                             tf.logical_not(finite))))
        self.stats["nonfinite"].assign_add(count(tf.logical_not(finite)))
        self.stats["sum_sq_err"].assign_add(total(tf.square(f - c)))
        self.stats["sum_clean_sq"].assign_add(total(tf.square(c)))
        self.stats["sum_faulty_sq"].assign_add(total(tf.square(f)))
        self.stats["sum_dot"].assign_add(total(c * f))

    def get_config(self):
        config = super().get_config()
        config.update(
            injection_type=self.injection_type, probability=self.probability, bits=self.bits,
            signed=self.signed, scale=self.scale, bit=self.bit, stuck_value=self.stuck_value,
            seed=self.seed, layer_index=self.layer_index, num_layers=self.num_layers,
            mode=self.mode, injection_layer=self.injection_layer, apply_during=self.apply_during,
            epoch_interval=self.epoch_interval, step_interval=self.step_interval,
            track_statistics=self.track_statistics, target=self.target, resample=self.resample,
            grid_source=self.grid_source, quantize_all=self.quantize_all)
        return config

    # ------------------------------------------------------------------ helpers
    def statistics(self) -> dict[str, float]:
        """Raw statistic sums (see `classes_tool.quant.statistics` for the derived numbers)."""
        return {n: float(keras.ops.convert_to_numpy(v.value)) for n, v in self.stats.items()}

    def current_scale(self) -> float:
        """The grid step in use (calibration may refresh it during training)."""
        return float(keras.ops.convert_to_numpy(self.scale_var.value))

    def reset_statistics(self) -> None:
        for v in self.stats.values():
            v.assign(0.0)


# --------------------------------------------------------------------------- model level

def injection_layers(model: keras.Model) -> list[FaultInjection]:
    """The `FaultInjection` layers of `model`, in model order."""
    return [layer for layer in model.layers if isinstance(layer, FaultInjection)]


def set_injection(model: keras.Model, probability: float | None = None, seed: int | None = None,
                  apply_during: str | None = None, epoch: int | None = None,
                  step: int | None = None) -> None:
    """Change injection settings of a patched model in place, without recompiling it.

    `probability` is in percent. `apply_during` is train, eval, both, or "none" (switch off).
    """
    phases = {"train": (1.0, 0.0), "eval": (0.0, 1.0), "both": (1.0, 1.0), "none": (0.0, 0.0)}
    if apply_during is not None and apply_during not in phases:
        raise UserError(f"apply_during must be one of {', '.join(phases)}, got {apply_during!r}")
    if probability is not None and not 0.0 <= probability <= 100.0:
        raise UserError(f"probability must be between 0 and 100 percent, got {probability}")
    for layer in injection_layers(model):
        if probability is not None:
            layer.probability_var.assign(probability / 100.0)
        if seed is not None:
            layer.seed_var.assign(int(seed))
        if apply_during is not None:
            layer.inject_train.assign(phases[apply_during][0])
            layer.inject_eval.assign(phases[apply_during][1])
        if epoch is not None:
            layer.epoch_var.assign(int(epoch))
        if step is not None:
            layer.step_var.assign(int(step))


def recalibrate(model: keras.Model, data: np.ndarray, batch_size: int = 256) -> None:
    """Refresh the grid step of calibrated integer layers from the model's current ranges.

    During fault-aware training the weights move and so do the activation ranges; a grid frozen
    at the start would let faults shrink relative to the activations (the network could "escape"
    them by growing), and the robustness would not survive calibrating the tuned model.
    Layers whose grid comes from a fake-quant layer, or from the grid stored with a tuned model,
    keep it. Signedness is kept.
    """
    layers = [fi for fi in injection_layers(model)
              if fi.grid_source == "calibration" and fi.strategy.domain == "int"]
    if not layers:
        return
    ranges = calibrate_ranges(model, [fi.target for fi in layers], data, batch_size)
    for fi in layers:
        lo, hi = ranges[fi.target]
        top = (1 << (fi.bits - 1)) - 1 if fi.signed else (1 << fi.bits) - 1
        span = max(abs(lo), abs(hi))
        if np.isfinite(span) and span > 0:
            fi.scale_var.assign(span / top)


def resolve_targets(model: keras.Model, layers: list[str] | None) -> list[str]:
    """Node names to inject after, in model order.

    `layers` entries are layer names or class names. Without them: the fake-quant layers when the
    model has some, else every Conv/Dense layer that does not produce a model output.
    """
    names = [layer.name for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer | FaultInjection)]
    by_name = {layer.name: layer for layer in model.layers}
    if layers:
        chosen = set()
        for entry in layers:
            matches = [n for n in names if n == entry or type(by_name[n]).__name__ == entry]
            if not matches:
                raise UserError(f"fault_injection.layers: {entry!r} is neither a layer name nor a "
                                f"layer class of the model; layers: {', '.join(names)}")
            chosen.update(matches)
        return [n for n in names if n in chosen]
    fake = fake_quant_layers(model)
    if fake:
        return fake
    output_layers = {t._keras_history[0].name for t in model.outputs}
    targets = [n for n in names if type(by_name[n]).__name__ in DEFAULT_LAYER_CLASSES
               and n not in output_layers]
    if not targets:
        raise UserError("no layer to inject after: the model has no fake-quant or hidden "
                        "Conv/Dense layer; name them in fault_injection.layers")
    return targets


InsertAfter = Callable[[keras.Model, list[str], Callable[[str, tuple], keras.layers.Layer]],
                       keras.Model]


def make_layers(model: keras.Model, config: dict | FaultInjectionConfig,
                calibration_data: np.ndarray | None
                ) -> tuple[list[str], Callable[[str, tuple], FaultInjection], dict[str, QuantSpec]]:
    """Targets, the `make_layer(node_name, output_shape)` factory, and each target's grid."""
    cfg = parse_fault_injection(config)
    targets = resolve_targets(model, cfg.layers)
    strategy = get_strategy(cfg.injection_type, bit=cfg.bit, value=cfg.stuck_value)
    if strategy.domain == "int":
        data = None if calibration_data is None else calibration_data[:cfg.calibration_samples]
        stored = attached_grid(model) if cfg.stored_grid else {}
        specs = quant_specs(model, targets, data, cfg.bit_width, stored=stored)
    else:
        width = 32 if strategy.domain == "float32" else 16
        specs = {n: QuantSpec(scale=1.0, bits=width, signed=True, source=strategy.domain)
                 for n in targets}
    if isinstance(cfg.injection_layer, str):
        if cfg.injection_layer not in targets:
            raise UserError(f"fault_injection.injection_layer {cfg.injection_layer!r} is not an "
                            f"injected layer; injected: {', '.join(targets)}")
        layer_choice = targets.index(cfg.injection_layer)
    else:
        layer_choice = cfg.injection_layer
        if layer_choice >= len(targets):
            raise UserError(f"fault_injection.injection_layer {layer_choice} is out of range: "
                            f"{len(targets)} injected layers (0..{len(targets) - 1}, or -1)")

    def make_layer(node_name: str, output_shape: tuple = ()) -> FaultInjection:
        spec = specs[node_name]
        return FaultInjection(
            injection_type=cfg.injection_type, probability=cfg.probability, bits=spec.bits,
            signed=spec.signed, scale=spec.scale, bit=cfg.bit, stuck_value=cfg.stuck_value,
            seed=cfg.seed, layer_index=targets.index(node_name), num_layers=len(targets),
            mode=cfg.mode, injection_layer=layer_choice, apply_during=cfg.apply_during,
            epoch_interval=cfg.epoch_interval, step_interval=cfg.step_interval,
            track_statistics=cfg.track_statistics, target=node_name, resample=cfg.resample,
            grid_source=spec.source, quantize_all=cfg.quantize_all, name=f"{node_name}_fault_injection")

    return targets, make_layer, specs


def apply_fault_injection(model: keras.Model, config: dict | FaultInjectionConfig,
                          calibration_data: np.ndarray | None = None,
                          insert_after: InsertAfter | None = None) -> keras.Model:
    """A new model with a `FaultInjection` layer after each target layer of `model`.

    `config` is the `fault_injection:` block. `calibration_data` (model inputs) sets the integer
    grid of layers that carry none: neither a fake-quant layer nor, unless `stored_grid: false`,
    a grid stored with the model by fault-aware training (see `calibration.attach_grid`).
    `insert_after` defaults to `classes_tool.graph.insert_after`.
    With `enabled: false` the model is returned unchanged.
    """
    cfg = parse_fault_injection(config)
    if not cfg.enabled:
        return model
    targets, make_layer, _ = make_layers(model, cfg, calibration_data)
    splice = insert_after or graph_insert_after
    return splice(model, targets, make_layer)
