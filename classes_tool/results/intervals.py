"""Confidence intervals that follow how a campaign samples: faults are the sampling unit.

A campaign draws faults from a target's population and runs every fault on the same inputs, so
the evaluations of one fault are correlated (a fault that flips a sign corrupts nearly every
input; one that hits a dead region corrupts none). The m evaluations of a fault are therefore not
m independent trials, and a Wilson interval over all (fault, input) rows is too narrow by the
square root of the design effect (4.6 to 6x on the shipped demo).

Two kinds of rate, two designs:

- **Per-evaluation rate** of an outcome: the mean over faults of each fault's rate over its
  inputs. With a *fixed* input set (the default: the inputs are the data set the user chose), the
  only randomness is the fault sample, and each fault contributes one number x_i in [0, 1]. The
  interval is a confidence interval for the mean of a bounded variable by betting (Waudby-Smith
  and Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 2024): a
  nonnegative martingale ("capital") per candidate mean, rejected when it reaches 1/alpha. It is
  valid for any distribution on [0, 1], at every sample size, not just asymptotically: in
  particular when a rare kind of fault that corrupts every input was not drawn at all, or when
  every drawn fault agreed by chance (it never has zero width). Faults drawn without replacement
  from a finite population (the systolic target) use the same martingale with the
  without-replacement mean of each next draw, which is the finite-population correction.
  With `anytime=True` the betting fractions are those of the confidence *sequence*, valid
  simultaneously at every number of faults, so a campaign that stops once its interval is narrow
  enough (adaptive sizing) still covers at the stated level.
- When the inputs are a random sample of a larger data set (`inputs: sampled`), inputs vary too
  (a crossed faults x inputs design). The variance of the grand mean is estimated from the
  two-way ANOVA mean squares, (MS_faults + MS_inputs - MS_residual) / (n m), and the interval is
  Wilson's score interval on the effective sample size p(1-p) / variance. Its coverage is checked
  by simulation in the tests.
- **Per-fault rate**: the share of faults that cause the outcome on at least one input (what many
  papers report). Each fault is a 0/1 draw; the same betting interval applies.

Every interval comes with its *design effect* (how many times the variance of the estimate
exceeds that of n*m independent trials with the same rate) and the *effective number of
independent observations* n*m / design effect, which are descriptive: they come from the sample
variance, and they say how much the clustering costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classes_tool.results.stats import z_value

#: The most a bet may stake of the capital: 1 + lambda (x - m) >= 1 - BET_CAP > 0.
BET_CAP = 0.75
#: Candidate means on each side of the estimate searched before the ends are refined.
GRID = 40
_REFINE_POINTS, _REFINE_ROUNDS = 17, 4


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and what the design cost."""

    estimate: float
    low: float
    high: float
    design_effect: float  # variance of the estimate / variance of n*m independent trials
    effective_n: float  # n*m / design_effect: independent observations the sample is worth

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


#: What a group without a complete fault gets: no estimate, the whole unit interval.
NO_DATA = Interval(math.nan, 0.0, 1.0, math.nan, 0.0)


def _alpha(confidence: float) -> float:
    z_value(confidence)  # validates the level
    return 1.0 - float(confidence)


def _bet_sizes(x: np.ndarray, alpha: float, anytime: bool,
               stages: Sequence[int] | None = None) -> np.ndarray:
    """Predictable betting fractions lambda_t (before truncation), from the mean and variance of
    the draws before t (the 'predictable plug-in' of Waudby-Smith and Ramdas).

    `stages` (adaptive sizing): [pilot, end of stage 2, end of stage 3, ...]. The pilot does
    not bet (lambda 0: it only sizes the next stage and seeds the variance estimate); a draw of
    stage k bets as a fixed-size interval of (its end - pilot) bets would. Every stage end is
    decided before that stage's draws are seen, so the fractions stay predictable and the
    capital a nonnegative supermartingale: Ville's inequality then makes the interval valid at
    any stage end, whichever one the campaign stopped at."""
    n = len(x)
    t = np.arange(1, n + 1, dtype=np.float64)
    csum = np.cumsum(x)
    mu = (0.5 + csum) / (t + 1.0)  # mu_hat_t after t draws
    mu_before = np.concatenate([[0.5], mu[:-1]])  # mu_hat_{t-1}
    sq = np.cumsum((x - mu_before) ** 2)
    var = (0.25 + sq) / (t + 1.0)  # sigma_hat^2_t
    var_before = np.concatenate([[0.25], var[:-1]])  # sigma_hat^2_{t-1}
    if stages is not None:
        horizon = np.zeros(n)
        pilot = int(stages[0])
        previous = pilot
        for end in list(stages[1:]):
            horizon[previous:end] = end - pilot
            previous = end
        horizon[previous:] = np.inf  # beyond the last planned stage: no bet
        horizon[:pilot] = np.inf
        lam = np.sqrt(2.0 * math.log(2.0 / alpha) / var_before) / np.sqrt(horizon)
    elif anytime:
        lam = np.sqrt(2.0 * math.log(2.0 / alpha) / (var_before * t * np.log1p(t)))
    else:
        lam = np.sqrt(2.0 * math.log(2.0 / alpha) / (var_before * n))
    return lam


def _log_capital(x: np.ndarray, lam: np.ndarray, means: np.ndarray, population: int | None,
                 running: bool) -> np.ndarray:
    """log of the hedged capital (K+ + K-) / 2 for each candidate mean in `means`, after all
    draws (or its running maximum over draws when `running`)."""
    n = len(x)
    m = means[:, None]
    if population is None:
        m_t = np.broadcast_to(m, (len(means), n))
        impossible = np.zeros(len(means), bool)
    else:
        # without replacement: under the null mean m, the next draw's mean is what is left of
        # the population total, over what is left of the population
        before = np.concatenate([[0.0], np.cumsum(x)[:-1]])
        t = np.arange(n, dtype=np.float64)
        m_t = (population * m - before[None, :]) / (population - t[None, :])
        bad = (m_t < -1e-12) | (m_t > 1 + 1e-12)
        impossible = bad.any(axis=1)
        m_t = np.clip(m_t, 0.0, 1.0)
    d = x[None, :] - m_t
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_up = np.minimum(lam[None, :], BET_CAP / np.maximum(m_t, 1e-300))
        lam_down = np.minimum(lam[None, :], BET_CAP / np.maximum(1.0 - m_t, 1e-300))
    up = np.log1p(lam_up * d)
    down = np.log1p(-lam_down * d)
    # the hedged capital (K+ + K-) / 2: a bet on each side with half the capital, itself a
    # nonnegative supermartingale at the true mean
    if running:
        log_k = np.logaddexp(np.cumsum(up, axis=1), np.cumsum(down, axis=1)).max(axis=1)
    else:
        log_k = np.logaddexp(up.sum(axis=1), down.sum(axis=1))
    log_k = log_k + math.log(0.5)
    log_k[impossible] = np.inf
    return log_k


def betting_interval(x, confidence: float = 0.95, population: int | None = None,
                     anytime: bool = False, stages: Sequence[int] | None = None
                     ) -> tuple[float, float]:
    """Confidence interval for the mean of the draws `x` in [0, 1], in draw order.

    `population`: the draws are without replacement from this many units (finite-population
    correction); None: independent draws. Valid for any distribution on [0, 1].
    `anytime`: the confidence sequence (valid at every sample size at once, for subgroups of an
    adaptive campaign); `stages`: the stage ends of an adaptive campaign (see `_bet_sizes`),
    valid at whichever stage it stopped.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if np.any(~np.isfinite(x)) or np.any(x < 0) or np.any(x > 1):
        raise ValueError("betting_interval needs values in [0, 1]")
    n = len(x)
    if n == 0:
        return 0.0, 1.0
    if population is not None:
        if population < n:
            raise ValueError(f"{n} draws without replacement from a population of {population}")
        if population == n:  # a census: the mean is known
            mean = float(x.mean())
            return mean, mean
    alpha = _alpha(confidence)
    lam = _bet_sizes(x, alpha, anytime, stages)
    threshold = math.log(1.0 / alpha)
    chunk = max(1, 4_000_000 // max(n, 1))

    def accepted(means: np.ndarray) -> np.ndarray:
        out = np.empty(len(means), bool)
        for s in range(0, len(means), chunk):
            out[s:s + chunk] = _log_capital(x, lam, means[s:s + chunk], population,
                                            running=anytime) < threshold
        return out

    centre = float(x.mean())
    # candidates close to the mean are dense, far ones sparse: the interval's ends lie at a
    # distance between about 1/n and 1 from it
    offsets = np.geomspace(1e-7, 1.0, GRID)
    grid = np.unique(np.clip(np.concatenate([[0.0, 1.0, centre], centre - offsets,
                                             centre + offsets]), 0.0, 1.0))
    ok = accepted(grid)
    if not ok.any():
        # every candidate rejected (probability at most alpha): the narrowest honest answer
        # left is the point estimate's neighbourhood on the grid
        i = int(np.searchsorted(grid, centre))
        lo_i, hi_i = max(0, i - 1), min(len(grid) - 1, i + 1)
        return float(grid[lo_i]), float(grid[hi_i])
    idx = np.flatnonzero(ok)
    lo_i, hi_i = int(idx[0]), int(idx[-1])

    def refine(inside: float, outside: float) -> float:
        """The boundary between an accepted and a rejected mean: four rounds of a 17-point
        search (each one vectorised call) shrink the grid's bracket 65536 times (a few parts in
        a million of the half-width), ending on the rejected side, so the interval is never
        narrower than the exact one."""
        for _ in range(_REFINE_ROUNDS):
            points = np.linspace(inside, outside, _REFINE_POINTS)
            ok_points = accepted(points)
            first_out = int(np.argmin(ok_points)) if not ok_points.all() else len(points) - 1
            inside, outside = float(points[max(first_out - 1, 0)]), float(points[first_out])
        return outside  # the conservative side

    low = 0.0 if lo_i == 0 else refine(float(grid[lo_i]), float(grid[lo_i - 1]))
    high = 1.0 if hi_i == len(grid) - 1 else refine(float(grid[hi_i]), float(grid[hi_i + 1]))
    return max(0.0, low), min(1.0, high)


def projected_bets(x, margin: float, confidence: float) -> int:
    """About how many bets a fixed-size betting interval needs to reach half-width `margin` on
    draws distributed like `x` (a pilot): first from the variance, sqrt(2 v log(2 / alpha) / b),
    then corrected by the half-width the interval really has on the pilot repeated to that
    size (skewed draws, such as rare faults that corrupt every input, need more than the
    variance says)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if len(x) == 0:
        return 1
    alpha = _alpha(confidence)
    var = (0.25 + float(np.sum((x - x.mean()) ** 2))) / (len(x) + 1)
    first = max(2, math.ceil(2.0 * var * math.log(2.0 / alpha) / margin ** 2))
    first = min(first, 1_000_000)
    low, high = betting_interval(np.resize(x, first), confidence)
    half = (high - low) / 2.0
    if half <= 0:
        return first
    return max(2, math.ceil(first * (half / margin) ** 2))


def _design(mean: float, var_of_mean: float, evaluations: int) -> tuple[float, float]:
    """(design effect, effective n) from the variance of the estimate."""
    if evaluations <= 0:
        return math.nan, 0.0
    independent = mean * (1.0 - mean) / evaluations
    if independent <= 0.0:  # every draw 0 or every draw 1: nothing to compare with
        return math.nan, math.nan
    deff = max(var_of_mean, 0.0) / independent
    return deff, (evaluations / deff if deff > 0 else math.inf)


def fault_mean_interval(x, inputs: int, confidence: float = 0.95, population: int | None = None,
                        anytime: bool = False, stages: Sequence[int] | None = None) -> Interval:
    """Per-evaluation rate over a fixed input set: `x` holds each fault's rate over its `inputs`
    inputs, in draw order; the interval is `betting_interval`'s."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = len(x)
    if n == 0:
        return NO_DATA
    low, high = betting_interval(x, confidence, population, anytime, stages)
    mean = float(x.mean())
    var = float(x.var(ddof=1)) / n if n > 1 else math.nan
    if population is not None and n > 1:
        var *= (population - n) / population
    deff, n_eff = _design(mean, var, n * inputs)
    return Interval(mean, low, high, deff, n_eff)


def share_interval(hits, confidence: float = 0.95, population: int | None = None,
                   anytime: bool = False, stages: Sequence[int] | None = None) -> Interval:
    """Per-fault rate: the share of faults whose indicator `hits` (0/1, draw order) is set."""
    hits = np.asarray(hits, dtype=np.float64).ravel()
    n = len(hits)
    if n == 0:
        return NO_DATA
    low, high = betting_interval(hits, confidence, population, anytime, stages)
    return Interval(float(hits.mean()), low, high, 1.0, float(n))


def crossed_interval(fault_sums, input_sums, confidence: float = 0.95) -> Interval:
    """Per-evaluation rate when faults *and* inputs are random samples (crossed design) of 0/1
    outcomes, every fault run on every input.

    `fault_sums[i]`: fault i's count over the m inputs (draw order); `input_sums[j]`: input j's
    count over the n faults. The grand mean's error is the sum of a fault-sampling part and an
    input-sampling part (plus their interaction, smaller than both); each part gets a betting
    interval at half the error probability, over the faults' rates and over the inputs' rates,
    and the half-widths add. That is conservative (half-widths add where variances would), and
    like the one-way interval it holds up when a rare kind of fault or input dominates.
    The design effect and effective n come from the two-way ANOVA variance of the grand mean,
    (MS_faults + MS_inputs - MS_residual) / (n m).
    """
    a = np.asarray(fault_sums, dtype=np.float64).ravel()
    b = np.asarray(input_sums, dtype=np.float64).ravel()
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return NO_DATA
    if abs(float(a.sum()) - float(b.sum())) > 0.5:
        raise ValueError("fault and input sums disagree")
    nm = n * m
    mean = float(a.sum()) / nm
    half_level = 1.0 - (1.0 - confidence) / 2.0
    f_low, f_high = betting_interval(a / m, half_level)
    i_low, i_high = betting_interval(b / n, half_level)
    low = max(0.0, mean - (mean - f_low) - (mean - i_low))
    high = min(1.0, mean + (f_high - mean) + (i_high - mean))
    # descriptive: the two-way variance of the grand mean (0/1 outcomes: sum of squares = sum)
    ss_total = float(a.sum()) - nm * mean * mean
    ss_faults = float(np.sum((a / m - mean) ** 2)) * m
    ss_inputs = float(np.sum((b / n - mean) ** 2)) * n
    var = math.nan
    if n > 1 and m > 1:
        ms_e = max(ss_total - ss_faults - ss_inputs, 0.0) / ((n - 1) * (m - 1))
        var = (ss_faults / (n - 1) + ss_inputs / (m - 1) - ms_e) / nm
    deff, n_eff = _design(mean, var, nm)
    return Interval(mean, low, high, deff, n_eff)


def stratified_interval(parts: Sequence[Interval], sizes: Sequence[int]) -> Interval:
    """The pooled rate of several strata (targets, each sampled and sized on its own) from their
    intervals: the size-weighted mean, with the size-weighted ends. Conservative: the strata's
    errors are independent and partly cancel, while the ends add as if they all went one way."""
    sizes_a = np.asarray(sizes, dtype=np.float64)
    keep = [(p, w) for p, w in zip(parts, sizes_a, strict=True) if w > 0 and
            math.isfinite(p.estimate)]
    if not keep:
        return NO_DATA
    total = sum(w for _, w in keep)
    est = sum(w * p.estimate for p, w in keep) / total
    low = sum(w * p.low for p, w in keep) / total
    high = sum(w * p.high for p, w in keep) / total
    n_eff = sum(p.effective_n for p, _ in keep if math.isfinite(p.effective_n))
    return Interval(est, max(0.0, low), min(1.0, high), math.nan, n_eff)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (p in (0, 1)): the CDF
    by Simpson's rule on the density, inverted by bisection (the standard library has no t
    distribution; exact to about 1e-9 for the levels an interval uses)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    log_c = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi))

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 4001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        h = t / 4000
        return 0.5 + h / 3 * float(f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2.0
        if high > 1e7:
            return math.inf
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return 0.5 * (low + high)


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Student's t interval for the mean of a few independent replicates (the seeds of a
    quantized-fault sweep: each seed's accuracy averages the effect of many independent
    activation faults over the whole test set, so it is close to normal); (nan, nan) with one
    replicate, where nothing is known of the spread."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0.0)
    mean = float(v.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1.0)
    half = t_quantile(1.0 - _alpha(confidence) / 2.0, n - 1) * float(
        v.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, math.nan, float(n))
