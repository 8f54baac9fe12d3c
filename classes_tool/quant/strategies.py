"""Fault strategies: how one hit activation is corrupted.

Accelerators hold activations as integers (``q = round(x / scale)`` clipped to the bit width) or
as IEEE-754 floats, so the faults worth simulating act on those representations, not on the
float a Keras model computes with. Each strategy is a small class with one method,
``corrupt(values, bits, signed, noise)``, written in TensorFlow ops so a whole activation tensor is
corrupted at once (it also runs eagerly on NumPy input, which is what the tests use).

* Integer strategies (``domain == "int"``) get the integer codes (int32) and return codes that
  stay inside the bit width: ``[-2**(bits-1), 2**(bits-1) - 1]`` when signed (two's complement),
  ``[0, 2**bits - 1]`` when unsigned.
* Float strategies (``domain == "float32"`` / ``"float16"``) get the float32 activations and flip
  one bit of their float32 or float16 encoding.

``noise`` is a non-negative int32 tensor of the same shape, drawn by the caller from its seed;
strategies that need randomness (``random``, a bit flip without a fixed bit) take it modulo what
they need, so they never own a random generator themselves.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from classes_tool.errors import UserError

_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str):
    """Class decorator: make a strategy available under `name` in configs."""

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def strategy_names() -> list[str]:
    """The valid `injection_type` names, sorted (used in error messages and docs)."""
    return sorted(_REGISTRY)


def get_strategy(name: str, bit: int | None = None, value: int | None = None) -> Strategy:
    """Build the strategy registered as `name`; an unknown name is a user mistake."""
    if name not in _REGISTRY:
        raise UserError(f"unknown injection_type {name!r}; valid: {', '.join(strategy_names())}")
    cls = _REGISTRY[name]
    return cls(bit=bit, value=value)


# --------------------------------------------------------------------------- integer helpers

def _to_unsigned(q: tf.Tensor, bits: int) -> tf.Tensor:
    """Bit pattern of `q` within `bits` bits (two's complement for negative values)."""
    return tf.bitwise.bitwise_and(q, (1 << bits) - 1)


def _from_unsigned(u: tf.Tensor, bits: int, signed: bool) -> tf.Tensor:
    """Inverse of `_to_unsigned`: read a `bits`-bit pattern as signed or unsigned integer."""
    if not signed:
        return u
    return tf.where(u >= (1 << (bits - 1)), u - (1 << bits), u)


def _bit_tensor(bit: int | None, bits: int, noise: tf.Tensor) -> tf.Tensor:
    """The bit position per element: the fixed `bit`, or one drawn from `noise` in [0, bits)."""
    if bit is None:
        return tf.math.floormod(noise, bits)
    if not 0 <= bit < bits:
        raise UserError(f"bit {bit} is outside the bit width {bits} (valid: 0..{bits - 1})")
    return tf.fill(tf.shape(noise), tf.constant(bit, noise.dtype))


class Strategy:
    """One way to corrupt a value. Subclasses implement `corrupt` only."""

    name: ClassVar[str] = ""
    domain: ClassVar[str] = "int"  # "int" codes, or "float32" / "float16" activations

    def __init__(self, bit: int | None = None, value: int | None = None):
        self.bit = bit
        self.value = value

    def corrupt(self, values: tf.Tensor, bits: int, signed: bool, noise: tf.Tensor) -> tf.Tensor:
        """Return the corrupted `values` (same shape and dtype)."""
        raise NotImplementedError


@register("random")
class RandomValue(Strategy):
    """Replace the code by another random code of the range.

    Adds a random offset in ``[1, 2**bits - 1]`` modulo ``2**bits`` to the bit pattern, so the result
    is uniform over the *other* codes of the range and never leaves it; every hit changes the value.
    """

    def corrupt(self, values, bits, signed, noise):
        offset = 1 + tf.math.floormod(noise, (1 << bits) - 1)
        u = tf.math.floormod(_to_unsigned(values, bits) + offset, 1 << bits)
        return _from_unsigned(u, bits, signed)


@register("lsb_flip")
class LsbFlip(Strategy):
    """Flip bit 0 (the smallest possible error: one quantization step)."""

    def corrupt(self, values, bits, signed, noise):
        return _from_unsigned(tf.bitwise.bitwise_xor(_to_unsigned(values, bits), 1), bits, signed)


@register("msb_flip")
class MsbFlip(Strategy):
    """Flip bit ``bits - 1`` (the sign bit when signed: the largest error)."""

    def corrupt(self, values, bits, signed, noise):
        u = tf.bitwise.bitwise_xor(_to_unsigned(values, bits), 1 << (bits - 1))
        return _from_unsigned(u, bits, signed)


@register("full_flip")
class FullFlip(Strategy):
    """Flip every bit within the bit width (one's complement of the code)."""

    def corrupt(self, values, bits, signed, noise):
        u = tf.bitwise.bitwise_xor(_to_unsigned(values, bits), (1 << bits) - 1)
        return _from_unsigned(u, bits, signed)


@register("bit_flip")
class BitFlip(Strategy):
    """Flip the chosen `bit` (0 = LSB); without a bit, a random bit per hit value."""

    def corrupt(self, values, bits, signed, noise):
        mask = tf.bitwise.left_shift(tf.ones_like(values), _bit_tensor(self.bit, bits, noise))
        return _from_unsigned(tf.bitwise.bitwise_xor(_to_unsigned(values, bits), mask), bits, signed)


class _StuckAt(Strategy):
    """Force the chosen `bit` (random per hit value without one) to `stuck` (0 or 1)."""

    stuck: ClassVar[int | None] = None

    def __init__(self, bit: int | None = None, value: int | None = None):
        super().__init__(bit, value)
        stuck = self.stuck if self.stuck is not None else value
        if stuck not in (0, 1):
            raise UserError(f"stuck_at needs stuck_value 0 or 1, got {stuck!r}")
        self.value = stuck

    def corrupt(self, values, bits, signed, noise):
        stuck = self.value
        mask = tf.bitwise.left_shift(tf.ones_like(values), _bit_tensor(self.bit, bits, noise))
        u = _to_unsigned(values, bits)
        if stuck:
            u = tf.bitwise.bitwise_or(u, mask)
        else:
            u = tf.bitwise.bitwise_and(u, tf.bitwise.invert(mask))
        return _from_unsigned(u, bits, signed)


@register("stuck_at")
class StuckAt(_StuckAt):
    """Stuck-at fault whose polarity comes from the config (`stuck_value`)."""


@register("stuck_at_0")
class StuckAt0(_StuckAt):
    """Bit stuck at 0."""

    stuck = 0


@register("stuck_at_1")
class StuckAt1(_StuckAt):
    """Bit stuck at 1."""

    stuck = 1


@register("float32_bit_flip")
class Float32BitFlip(Strategy):
    """Flip one bit (0..31; 31 = sign, 23..30 = exponent) of the float32 encoding."""

    domain = "float32"

    def corrupt(self, values, bits, signed, noise):
        raw = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
        mask = tf.bitwise.left_shift(tf.ones_like(raw), _bit_tensor(self.bit, 32, noise))
        return tf.bitcast(tf.bitwise.bitwise_xor(raw, mask), tf.float32)


@register("float16_bit_flip")
class Float16BitFlip(Strategy):
    """Flip one bit (0..15; 15 = sign, 10..14 = exponent) of the float16 encoding.

    The value is first rounded to float16 (what a half-precision accelerator holds), the bit is
    flipped, and the result is widened back to float32.
    """

    domain = "float16"

    def corrupt(self, values, bits, signed, noise):
        raw = tf.cast(tf.bitcast(tf.cast(values, tf.float16), tf.uint16), tf.int32)
        mask = tf.bitwise.left_shift(tf.ones_like(raw), _bit_tensor(self.bit, 16, noise))
        flipped = tf.cast(tf.bitwise.bitwise_xor(raw, mask), tf.uint16)
        return tf.cast(tf.bitcast(flipped, tf.float16), tf.float32)


def quantize(x: tf.Tensor, scale: float, bits: int, signed: bool) -> tf.Tensor:
    """Integer codes of `x`: ``round(x / scale)`` (half to even) clipped to the bit width."""
    lo, hi = code_range(bits, signed)
    q = tf.round(tf.cast(x, tf.float32) / scale)
    return tf.cast(tf.clip_by_value(q, lo, hi), tf.int32)


def dequantize(q: tf.Tensor, scale: float) -> tf.Tensor:
    """Float value of integer codes: ``q * scale``."""
    return tf.cast(q, tf.float32) * scale


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest code of a `bits`-bit integer."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1
