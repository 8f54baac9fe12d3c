"""SNN tables: rates over rounds (the sampling unit) with intervals over rounds."""

import numpy as np
import pytest

from classes_tool.results.intervals import fault_mean_interval, stratified_interval
from classes_tool.snn.metrics import CLASSES, Results


def _results():
    rng = np.random.default_rng(0)
    golden = rng.normal(size=(10, 4))
    golden[:, 0] += 5  # class 0 wins every sample
    scores = np.repeat(golden[None], 6, axis=0).copy()
    scores[0, :, 1] += 10  # round 0 flips every sample: sdc1 on all 10
    scores[1, :3, 2] += 10  # round 1 flips 3 samples
    scores[4, 0, 0] = np.nan  # round 4: one DUE
    info = [{"target": t, "pattern": "stuck", "params": {}}
            for t in ("lif1", "lif1", "lif1", "lif2", "lif2", "lif2")]
    return Results(golden, scores, np.zeros(10, int), info)


def test_rates_are_means_over_rounds_with_intervals_over_rounds():
    res = _results()
    by_target = {r["target"]: r for r in res.table("target", confidence=0.9)}
    lif1 = by_target["lif1"]
    assert lif1["faults"] == 3 and lif1["pairs"] == 30
    sdc = np.array([1.0, 0.3, 0.0])
    iv = fault_mean_interval(sdc, 10, 0.9)
    assert lif1["sdc1"] == pytest.approx(sdc.mean())
    assert lif1["sdc1_ci"] == pytest.approx((iv.low, iv.high))
    assert lif1["accuracy"] == pytest.approx(1 - sdc.mean())
    # the interval is that of 3 rounds, not of 30 independent (round, sample) pairs
    assert iv.high - iv.low > 0.5
    assert "masked" in lif1 and set(CLASSES) <= set(lif1)


def test_a_group_spanning_targets_combines_them_as_strata():
    res = _results()
    (row,) = res.table("pattern", confidence=0.9)
    parts = [fault_mean_interval(np.array(v), 10, 0.9) for v in ([1.0, 0.3, 0.0],
                                                                   [0.0, 0.0, 0.0])]
    combined = stratified_interval(parts, [3, 3])
    assert row["sdc1"] == pytest.approx(1.3 / 6)
    assert row["sdc1_ci"] == pytest.approx((combined.low, combined.high))
