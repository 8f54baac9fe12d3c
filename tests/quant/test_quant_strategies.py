"""Each strategy against hand-computed integer (and float encoding) examples."""

import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.quant.strategies import (
    code_range,
    dequantize,
    get_strategy,
    quantize,
    strategy_names,
)


def run(name, values, bits, signed, noise=None, bit=None, value=None):
    values = np.asarray(values, np.int32)
    noise = np.zeros_like(values) if noise is None else np.asarray(noise, np.int32)
    out = get_strategy(name, bit=bit, value=value).corrupt(values, bits, signed, noise)
    return np.asarray(out).tolist()


@pytest.mark.parametrize("name, values, bits, signed, expected", [
    # lsb: 5=0b101 -> 0b100; -1=0xFF -> 0xFE=-2; -128=0x80 -> 0x81=-127; 127 -> 126
    ("lsb_flip", [5, -1, -128, 127, 0], 8, True, [4, -2, -127, 126, 1]),
    ("lsb_flip", [0, 255, 254], 8, False, [1, 254, 255]),
    # msb of signed 8-bit is the sign bit (weight -128)
    ("msb_flip", [5, -1, 0, -128, 127], 8, True, [-123, 127, -128, 0, -1]),
    ("msb_flip", [5, 255, 0, 128], 8, False, [133, 127, 128, 0]),
    ("msb_flip", [0, 1, 2, 3], 2, False, [2, 3, 0, 1]),
    # full flip = one's complement: signed ~x = -x - 1; unsigned 4-bit 15 - x
    ("full_flip", [5, -128, 127, 0, -1], 8, True, [-6, 127, -128, -1, 0]),
    ("full_flip", [0, 3, 15, 9], 4, False, [15, 12, 0, 6]),
    ("full_flip", [-32768, 32767], 16, True, [32767, -32768]),
])
def test_fixed_bit_strategies(name, values, bits, signed, expected):
    assert run(name, values, bits, signed) == expected


@pytest.mark.parametrize("name, bit, value, values, bits, signed, expected", [
    ("bit_flip", 2, None, [3, 7, 0, 15], 4, False, [7, 3, 4, 11]),
    ("bit_flip", 3, None, [7, -8, 0, -1], 4, True, [-1, 0, -8, 7]),
    ("bit_flip", 0, None, [0, 65535], 16, False, [1, 65534]),
    ("stuck_at_1", 0, None, [4, 5, 0, 255], 8, False, [5, 5, 1, 255]),
    ("stuck_at_0", 7, None, [-1, 5, -128, 127], 8, True, [127, 5, 0, 127]),
    ("stuck_at_1", 7, None, [0, 127, -5], 8, True, [-128, -1, -5]),
    ("stuck_at", 3, 1, [0, 8, 7], 4, False, [8, 8, 15]),
    ("stuck_at", 3, 0, [15, 8, 7], 4, False, [7, 0, 7]),
])
def test_chosen_bit_strategies(name, bit, value, values, bits, signed, expected):
    assert run(name, values, bits, signed, bit=bit, value=value) == expected


def test_random_bit_comes_from_noise():
    # noise 9 -> bit 9 % 4 = 1; noise 2 -> bit 2; noise 4 -> bit 0
    assert run("bit_flip", [0, 0, 0], 4, False, noise=[9, 2, 4]) == [2, 4, 1]


def test_random_is_modular_addition_of_a_nonzero_offset():
    # offset = 1 + noise % 255 ; u = (u + offset) mod 256
    assert run("random", [127, -1, -1, -128], 8, True, noise=[0, 0, 254, 255]) == [-128, 0, -2, -127]
    assert run("random", [255, 0], 8, False, noise=[0, 254]) == [0, 255]


@pytest.mark.parametrize("bits, signed", [(2, False), (3, True), (8, True), (8, False)])
def test_random_always_changes_and_stays_in_range(bits, signed):
    lo, hi = code_range(bits, signed)
    for v in (lo, 0, hi):
        noise = np.arange(2**bits - 1)
        out = np.array(run("random", np.full(noise.shape, v), bits, signed, noise=noise))
        assert out.min() >= lo and out.max() <= hi
        # over one period of the noise, every other code is reached exactly once
        assert sorted(out.tolist()) == [c for c in range(lo, hi + 1) if c != v]


def test_float32_bit_flips():
    s = get_strategy("float32_bit_flip", bit=31)
    assert np.asarray(s.corrupt(np.float32([1.0, -2.5]), 0, True, np.int32([0, 0]))).tolist() == [-1.0, 2.5]
    s = get_strategy("float32_bit_flip", bit=23)  # lowest exponent bit: 1.0 (0x3F800000) -> 0.5
    assert np.asarray(s.corrupt(np.float32([1.0]), 0, True, np.int32([0]))).tolist() == [0.5]
    s = get_strategy("float32_bit_flip", bit=0)  # lowest mantissa bit: next float after 1.0
    out = np.asarray(s.corrupt(np.float32([1.0]), 0, True, np.int32([0])))
    assert out[0] == np.nextafter(np.float32(1.0), np.float32(2.0))


def test_float16_bit_flips():
    s = get_strategy("float16_bit_flip", bit=15)
    assert np.asarray(s.corrupt(np.float32([1.0]), 0, True, np.int32([0]))).tolist() == [-1.0]
    s = get_strategy("float16_bit_flip", bit=10)  # 1.0 = 0x3C00 -> 0x3800 = 0.5
    assert np.asarray(s.corrupt(np.float32([1.0]), 0, True, np.int32([0]))).tolist() == [0.5]
    s = get_strategy("float16_bit_flip", bit=14)  # 2.0 = 0x4000 -> 0x0000; 1.0 -> 0x7C00 = inf
    out = np.asarray(s.corrupt(np.float32([2.0, 1.0]), 0, True, np.int32([0, 0])))
    assert out[0] == 0.0 and np.isinf(out[1])


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(UserError) as err:
        get_strategy("bitflip")
    for name in ("random", "lsb_flip", "msb_flip", "full_flip", "bit_flip", "stuck_at_0",
                 "stuck_at_1", "float32_bit_flip", "float16_bit_flip"):
        assert name in strategy_names()
        assert name in str(err.value)


def test_bad_bit_and_stuck_value_are_user_errors():
    with pytest.raises(UserError, match="outside the bit width"):
        run("bit_flip", [0], 4, False, bit=4)
    with pytest.raises(UserError, match="stuck_value"):
        get_strategy("stuck_at", bit=0, value=None)


def test_quantize_rounds_and_clips():
    q = np.asarray(quantize(np.float32([0.26, -1.0, 100.0, -100.0, 0.05]), 0.1, 8, True))
    assert q.tolist() == [3, -10, 127, -128, 0]  # 0.5 rounds half to even
    q = np.asarray(quantize(np.float32([-0.3, 0.3, 1e9]), 0.1, 4, False))
    assert q.tolist() == [0, 3, 15]
    assert np.allclose(np.asarray(dequantize(np.int32([3, -10]), 0.1)), [0.3, -1.0])
