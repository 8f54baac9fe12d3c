"""Properties of the intervals over faults that do not need a simulation to check."""

import math

import numpy as np
import pytest

from classes_tool.results.adaptive import AdaptiveSizing, schedule, sizing_for
from classes_tool.results.intervals import (
    Interval,
    betting_interval,
    crossed_interval,
    fault_mean_interval,
    projected_bets,
    share_interval,
    stratified_interval,
)


def test_never_zero_width_when_every_fault_agrees():
    for value in (0.0, 1.0, 0.3):
        low, high = betting_interval(np.full(200, value), 0.99)
        assert low <= value <= high and high - low > 1e-3
    low, high = betting_interval(np.zeros(200), 0.99)
    assert low == 0.0 and 0.0 < high < 0.1  # nothing seen: still room for a rare kind of fault


def test_contains_the_mean_narrows_with_more_faults_and_widens_with_confidence():
    rng = np.random.default_rng(0)
    x = rng.binomial(20, rng.beta(0.5, 2, 2000), 2000) / 20
    widths = []
    for n in (50, 200, 800, 2000):
        low, high = betting_interval(x[:n], 0.95)
        assert low < x[:n].mean() < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    low99, high99 = betting_interval(x, 0.99)
    low95, high95 = betting_interval(x, 0.95)
    assert low99 < low95 and high99 > high95


def test_without_replacement_a_census_is_exact_and_a_large_share_narrows():
    rng = np.random.default_rng(1)
    population = rng.random(300)
    assert betting_interval(population, 0.95, population=300) == (population.mean(),) * 2
    sample = population[:270]
    fpc = betting_interval(sample, 0.95, population=300)
    plain = betting_interval(sample, 0.95)
    assert fpc[1] - fpc[0] < plain[1] - plain[0]
    with pytest.raises(ValueError):
        betting_interval(sample, 0.95, population=100)


def test_values_outside_zero_one_are_refused():
    with pytest.raises(ValueError):
        betting_interval([0.2, 1.5])
    with pytest.raises(ValueError):
        betting_interval([0.2, math.nan])
    assert betting_interval([]) == (0.0, 1.0)


def test_design_effect_and_effective_n():
    # all-or-nothing faults: the design effect is about m (every input of a fault agrees)
    x = np.array([1.0] * 30 + [0.0] * 70)
    iv = fault_mean_interval(x, 50, 0.95)
    assert iv.design_effect == pytest.approx(50 * x.var(ddof=1) / (0.3 * 0.7), rel=1e-9)
    assert 45 < iv.design_effect < 55 and iv.effective_n == pytest.approx(5000 / iv.design_effect)
    share = share_interval(x > 0, 0.95)
    assert share.estimate == pytest.approx(0.3)


def test_the_pilot_does_not_bet_and_stages_bet_towards_their_end():
    rng = np.random.default_rng(2)
    x = (rng.random(500) < 0.1).astype(float)
    assert betting_interval(x[:40], 0.95, stages=[40]) == (0.0, 1.0)  # the pilot alone
    staged = betting_interval(x[:300], 0.95, stages=[40, 300])
    fixed_on_the_stage = betting_interval(x[40:300], 0.95)
    # the pilot only sizes the bets (its spread seeds their variance estimate)
    assert staged == pytest.approx(fixed_on_the_stage, rel=1e-2)


def test_schedule_stops_at_the_margin_or_the_cap():
    sizing = AdaptiveSizing(margin=0.05, confidence=0.95, pilot=20, cap=1000)
    looks = []

    def look(stages):
        looks.append(list(stages))
        n = stages[-1] - stages[0]
        return (0.5 if n == 0 else 0.6 / math.sqrt(n)), 200.0

    stages, finished = schedule(sizing, 1000, look)
    assert finished and stages[0] == 20 and stages[1] == 20 + math.ceil(0.8 * 200)
    assert 0.6 / math.sqrt(stages[-1] - 20) <= 0.05 and stages == looks[-1]
    # not enough faults evaluated yet: the next stage to run, unfinished
    assert schedule(sizing, 100, look) == ([20, 180], False)
    # the cap ends a target that never reaches the margin
    stages, finished = schedule(sizing, 1000, lambda s: (0.5, 1e6))
    assert finished and stages[-1] == 1000
    assert sizing_for(10**6, 0.02, 0.99).pilot == 104  # a fortieth of Leveugle's 4147


def test_projected_bets_grow_with_the_spread_and_shrink_with_the_margin():
    rng = np.random.default_rng(3)
    narrow = rng.random(100) * 0.1
    wide = (rng.random(100) < 0.5).astype(float)
    assert projected_bets(narrow, 0.02, 0.95) < projected_bets(wide, 0.02, 0.95)
    assert projected_bets(wide, 0.05, 0.95) < projected_bets(wide, 0.02, 0.95)


def test_crossed_and_stratified_intervals():
    rng = np.random.default_rng(4)
    y = rng.random((60, 15)) < 0.3
    iv = crossed_interval(y.sum(axis=1), y.sum(axis=0), 0.95)
    one_way = fault_mean_interval(y.mean(axis=1), 15, 0.95)
    assert iv.low < y.mean() < iv.high and iv.high - iv.low > one_way.high - one_way.low
    with pytest.raises(ValueError):
        crossed_interval([1, 2], [5], 0.95)
    parts = [Interval(0.1, 0.05, 0.2, 1.0, 10.0), Interval(0.5, 0.4, 0.6, 1.0, 10.0)]
    pooled = stratified_interval(parts, [100, 300])
    assert pooled.estimate == pytest.approx(0.4)
    assert (pooled.low, pooled.high) == pytest.approx((0.3125, 0.5))
