"""Sample sizing and intervals against hand-computed and textbook values."""

import math

import pytest

from classes_tool.errors import UserError
from classes_tool.results.stats import (
    achieved_margin,
    layerwise_sizes,
    leveugle_sample_size,
    wilson_interval,
    z_value,
)

T99 = 2.5758293035489004  # normal quantile 0.995, from tables
T95 = 1.959963984540054  # normal quantile 0.975


def test_z_values_match_tables():
    assert z_value(0.99) == pytest.approx(T99, abs=1e-9)
    assert z_value(0.95) == pytest.approx(T95, abs=1e-9)


def test_leveugle_n1000_e5_c99_by_hand():
    # n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p))) with N=1000, e=0.05, t=2.5758, p=0.5
    n_exact = 1000 / (1 + 0.05**2 * 999 / (T99**2 * 0.25))
    assert n_exact == pytest.approx(399.09, abs=0.01)
    assert leveugle_sample_size(1000, margin=0.05, confidence=0.99) == math.ceil(n_exact) == 400


def test_leveugle_huge_population_gives_the_textbook_9604():
    # Cochran's infinite-population size 1.96^2 * 0.25 / 0.01^2 = 9604 (95 %, e = 1 %)
    assert leveugle_sample_size(10**12, margin=0.01, confidence=0.95) == 9604


def test_leveugle_other_p_and_small_populations():
    # p = 0.1: t^2 p (1-p) = 6.6349 * 0.09; N=10^6, e=0.01 -> about 5944
    n_exact = 10**6 / (1 + 0.01**2 * (10**6 - 1) / (T99**2 * 0.09))
    assert leveugle_sample_size(10**6, 0.01, 0.99, p=0.1) == math.ceil(n_exact)
    assert leveugle_sample_size(10, 0.01, 0.99) == 10  # never above N
    assert leveugle_sample_size(1) == 1
    assert leveugle_sample_size(0) == 0


@pytest.mark.parametrize("kwargs", [
    {"population": -1}, {"population": 10, "margin": 0}, {"population": 10, "margin": 1.5},
    {"population": 10, "confidence": 1.0}, {"population": 10, "p": 0.0},
    {"population": 2.5},
])
def test_invalid_sizing_inputs_are_user_errors(kwargs):
    with pytest.raises(UserError):
        leveugle_sample_size(**kwargs)


def test_achieved_margin_inverts_the_formula():
    # e = t sqrt(p(1-p) (N-n) / (n (N-1))), by hand for N=1000, n=400, 99 %
    assert achieved_margin(400, 1000, 0.99) == pytest.approx(
        T99 * math.sqrt(0.25 * 600 / (400 * 999)), rel=1e-12)
    assert achieved_margin(400, 1000, 0.99) == pytest.approx(0.049906, abs=1e-6)
    for N, e in [(1000, 0.05), (50_000, 0.01), (10**9, 0.02), (37, 0.1)]:
        n = leveugle_sample_size(N, e, 0.99)
        assert achieved_margin(n, N, 0.99) <= e + 1e-12
        if n > 1:
            assert achieved_margin(n - 1, N, 0.99) > e
    assert achieved_margin(1000, 1000) == 0.0
    assert achieved_margin(0, 1000) == math.inf


def test_wilson_textbook_values():
    lo, hi = wilson_interval(8, 10, 0.95)  # standard worked example: [0.4902, 0.9433]
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    lo, hi = wilson_interval(0, 10, 0.95)  # upper = (z^2/n) / (1 + z^2/n)
    z2n = T95**2 / 10
    assert lo == 0.0 and hi == pytest.approx(z2n / (1 + z2n), rel=1e-12)
    lo, hi = wilson_interval(10, 10, 0.95)
    assert hi == 1.0 and lo == pytest.approx(1 / (1 + z2n), rel=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_by_hand_formula():
    k, n, z = 37, 120, T95
    ph = k / n
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n, 0.95) == (pytest.approx(centre - half, rel=1e-12),
                                           pytest.approx(centre + half, rel=1e-12))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_layerwise_sizes_apply_the_formula_per_layer():
    sizes = layerwise_sizes({"conv": 1000, "dense": 10**9, "tiny": 5}, margin=0.05,
                            confidence=0.99)
    # dense: about t^2 p (1-p) / e^2 = 6.6349 * 0.25 / 0.0025 = 663.49 -> 664
    assert sizes == {"conv": 400, "dense": 664, "tiny": 5}
