"""Statistical fault injection: how many faults to inject, and how sure the resulting rates are.

Sample size (Leveugle, Calvez, Maistri, Vanhauwaert, "Statistical fault injection: quantified
error and confidence", DATE 2009): for a fault population of N, margin of error e, confidence
level with normal quantile t and an a-priori failure probability p (0.5 is the worst case),

    n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p)))

rounded up, never above N. Per-layer sizing (Ruospo et al., DATE 2023, layer-wise statistical
FI) applies the same formula to each layer's own population, so every layer's rate gets the margin
on its own instead of sharing one network-wide margin.

Rates carry Wilson score intervals: unlike the normal approximation they stay inside [0, 1] and
behave at 0 and 100 %, which is where fault-injection rates usually sit.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from classes_tool.errors import UserError


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise UserError(f"{name} must be strictly between 0 and 1, got {value}")
    return value


def z_value(confidence: float) -> float:
    """Two-sided normal quantile t for a confidence level (0.95 -> 1.95996...)."""
    confidence = _check_unit("confidence", confidence)
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def _check_population(population: int) -> int:
    if isinstance(population, bool) or int(population) != population or population < 0:
        raise UserError(f"fault population must be a non-negative integer, got {population!r}")
    return int(population)


def leveugle_sample_size(population: int, margin: float = 0.01, confidence: float = 0.99,
                         p: float = 0.5) -> int:
    """Faults to inject out of `population` for the given margin and confidence (DATE 2009)."""
    n_pop = _check_population(population)
    e = _check_unit("margin", margin)
    t = z_value(confidence)
    p = _check_unit("p", p)
    if n_pop == 0:
        return 0
    n = n_pop / (1.0 + e * e * (n_pop - 1) / (t * t * p * (1.0 - p)))
    # The tiny slack keeps float noise (e.g. 9604.000000000002) from adding one fault.
    return min(n_pop, max(1, math.ceil(n - 1e-9)))


def achieved_margin(n: int, population: int, confidence: float = 0.99, p: float = 0.5) -> float:
    """Margin of error reached by `n` faults out of `population` (the inverse of the formula).

    e = t * sqrt(p (1 - p) (N - n) / (n (N - 1))): the normal-approximation margin with the finite
    population correction; 0 when the whole population was injected, inf when nothing was.
    """
    n_pop = _check_population(population)
    n = _check_population(n)
    t = z_value(confidence)
    p = _check_unit("p", p)
    if n == 0:
        return math.inf
    if n >= n_pop:
        return 0.0
    return t * math.sqrt(p * (1.0 - p) * (n_pop - n) / (n * (n_pop - 1)))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    phat = k / n
    z2n = z * z / n
    centre = (phat + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(phat * (1.0 - phat) / n + z2n / (4.0 * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def layerwise_sizes(populations: dict[str, int], margin: float = 0.01, confidence: float = 0.99,
                    p: float = 0.5) -> dict[str, int]:
    """Per-layer sample sizes (DATE 2023 layer-wise SFI): the formula on each layer's population."""
    return {name: leveugle_sample_size(pop, margin, confidence, p)
            for name, pop in populations.items()}
