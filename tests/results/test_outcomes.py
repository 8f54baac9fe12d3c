"""Outcome classes at their boundaries, checked against hand-made cases and a plain-loop reference."""

import math

import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.results.outcomes import (
    BUCKETS,
    OUTCOMES,
    classify,
    error_bucket,
    error_buckets,
)


def one(golden, faulty, **kw):
    """Classify one row, return plain Python values."""
    c = classify(np.array([golden], float), np.array([faulty], float), **kw)
    return {k: v[0].item() for k, v in c.items()}


def test_identical_output_is_masked():
    r = one([0.1, 0.7, 0.2], [0.1, 0.7, 0.2])
    assert r == {"outcome": "masked", "sdc5": False, "rel_error": 0.0, "golden_top1": 1,
                 "faulty_top1": 1}


def test_tiny_difference_is_masked_and_just_beyond_tolerance_is_tolerable():
    assert one([0.1, 0.7, 0.2], [0.1 + 1e-9, 0.7 - 1e-9, 0.2])["outcome"] == "masked"
    assert one([0.1, 0.7, 0.2], [0.1 + 1e-3, 0.7 - 1e-3, 0.2])["outcome"] == "tolerable_sdc"


def test_exactly_at_tolerance_is_masked():
    # Binary fractions, so the differences are exact: |f - g| <= atol + rtol * |g| holds with ==.
    assert one([0.5, 0.25], [0.75, 0.25], atol=0.25, rtol=0.0)["outcome"] == "masked"
    assert one([0.5, 0.25], [0.75 + 2**-20, 0.25], atol=0.25, rtol=0.0)["outcome"] == "tolerable_sdc"
    # rtol is relative to the golden value (numpy.isclose's asymmetric convention)
    assert one([0.5, 0.25], [0.75, 0.25], atol=0.0, rtol=0.5)["outcome"] == "masked"
    assert one([0.5, 0.25], [0.5, 0.25 + 0.125 + 2**-20], atol=0.0, rtol=0.5)["outcome"] == \
        "tolerable_sdc"


def test_top1_change_is_critical_and_beats_tolerance():
    r = one([0.8, 0.2], [0.3, 0.7])
    assert (r["outcome"], r["golden_top1"], r["faulty_top1"]) == ("critical_sdc", 0, 1)
    # near tie flipped by a change far below the tolerance: still critical (precedence)
    assert one([0.5, 0.5 - 1e-9], [0.5 - 1e-9, 0.5])["outcome"] == "critical_sdc"


def test_ties_resolve_to_the_lowest_index_for_golden_and_faulty():
    r = one([0.4, 0.4, 0.2], [0.4, 0.4, 0.2])
    assert (r["outcome"], r["golden_top1"], r["faulty_top1"]) == ("masked", 0, 0)
    r = one([0.1, 0.6, 0.3], [0.45, 0.45, 0.1])  # faulty tie between 0 and 1 -> 0
    assert (r["outcome"], r["faulty_top1"]) == ("critical_sdc", 0)
    r = one([0.2, 0.4, 0.4], [0.2, 0.3, 0.5])  # golden tie -> 1; faulty top 2
    assert (r["outcome"], r["golden_top1"], r["faulty_top1"]) == ("critical_sdc", 1, 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_anywhere_is_due_and_wins(bad):
    r = one([0.8, 0.1, 0.1], [0.8, 0.1, bad])
    assert r["outcome"] == "due"
    assert r["sdc5"] is True
    assert math.isnan(r["rel_error"])
    assert r["faulty_top1"] == -1
    # DUE beats a top-1 change
    assert one([0.8, 0.1, 0.1], [0.1, 0.9, bad])["outcome"] == "due"


def test_nan_in_golden_is_a_user_error():
    with pytest.raises(UserError, match="fault-free"):
        classify(np.array([[0.5, math.nan]]), np.array([[0.5, 0.5]]))


def test_sdc5_rank_boundary_and_ties():
    golden = np.zeros(10)
    golden[0] = 1.0
    # class 0 has 4 classes above it: 5th place -> in top-5
    f = np.array([0.5, 0.9, 0.8, 0.7, 0.6, 0.1, 0, 0, 0, 0])
    assert one(golden, f)["sdc5"] is False
    # 5 classes above it: 6th place -> SDC-5
    f = np.array([0.5, 0.9, 0.8, 0.7, 0.6, 0.55, 0, 0, 0, 0])
    r = one(golden, f)
    assert (r["sdc5"], r["outcome"]) == (True, "critical_sdc")
    # tie at 5th place with a higher index: the lower index (golden's class 0) comes first
    f = np.array([0.5, 0.9, 0.8, 0.7, 0.6, 0.5, 0, 0, 0, 0])
    assert one(golden, f)["sdc5"] is False
    # golden top is class 9; tied with class 5 (lower index) which comes first -> 6th -> SDC-5
    golden = np.zeros(10)
    golden[9] = 1.0
    f = np.array([0, 0.9, 0.8, 0.7, 0.6, 0.5, 0, 0, 0, 0.5])
    assert one(golden, f)["sdc5"] is True


@pytest.mark.parametrize("classes", [1, 3, 5])
def test_sdc5_never_with_five_classes_or_fewer(classes):
    golden = np.linspace(1, 0, classes)
    faulty = golden[::-1].copy()
    r = one(golden, faulty)
    assert r["sdc5"] is False
    assert r["outcome"] == ("masked" if classes == 1 else "critical_sdc")


def test_relative_error_at_golden_top1():
    r = one([0.8, 0.2], [0.6, 0.4])
    assert r["rel_error"] == pytest.approx(25.0)  # 100 * |0.6 - 0.8| / 0.8
    r = one([-2.0, -4.0], [-1.0, -4.0])  # logits: |g[t]| in the denominator
    assert r["rel_error"] == pytest.approx(50.0)


def test_relative_error_with_zero_golden_top_score():
    assert one([0.0, -1.0], [0.0, -2.0])["rel_error"] == 0.0
    assert one([0.0, -1.0], [0.5, -1.0])["rel_error"] == math.inf


def test_golden_row_broadcasts_and_shapes_are_checked():
    g = np.array([0.8, 0.2])
    f = np.array([[0.8, 0.2], [0.2, 0.8]])
    assert classify(g, f)["outcome"].tolist() == ["masked", "critical_sdc"]
    with pytest.raises(ValueError):
        classify(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        classify(np.zeros((2, 3)), np.zeros((2, 2)))


@pytest.mark.parametrize("value,label", [
    (0.0, "0-5%"), (4.999, "0-5%"), (5.0, "5-10%"), (9.99, "5-10%"), (10.0, "10-20%"),
    (19.999, "10-20%"), (20.0, ">20%"), (1e9, ">20%"), (math.inf, ">20%"), (math.nan, "due"),
])
def test_error_buckets_half_open(value, label):
    assert error_bucket(value) == label
    assert error_buckets(np.array([value])).tolist() == [label]


def test_error_bucket_rejects_negative():
    with pytest.raises(ValueError):
        error_bucket(-1.0)


def reference(golden_row, faulty_row, atol=1e-6, rtol=1e-5):
    """A deliberately plain per-row version of the documented rules."""
    g = [float(x) for x in golden_row]
    f = [float(x) for x in faulty_row]
    gt = max(range(len(g)), key=lambda i: (g[i], -i))
    if any(not math.isfinite(x) for x in f):
        return "due", True, gt, -1
    ft = max(range(len(f)), key=lambda i: (f[i], -i))
    order = sorted(range(len(f)), key=lambda i: (-f[i], i))
    sdc5 = gt not in order[:5]
    if ft != gt:
        out = "critical_sdc"
    elif all(abs(a - b) <= atol + rtol * abs(b) for a, b in zip(f, g, strict=True)):
        out = "masked"
    else:
        out = "tolerable_sdc"
    return out, sdc5, gt, ft


def test_vectorised_matches_plain_reference_on_random_rows_with_ties_and_nans():
    rng = np.random.default_rng(0)
    n, classes = 600, 8
    golden = np.round(rng.random((n, classes)) * 4) / 4  # coarse grid -> many ties
    faulty = golden.copy()
    hit = rng.random(n) < 0.7
    faulty[hit] = np.round((golden[hit] + rng.normal(0, 0.3, (hit.sum(), classes))) * 4) / 4
    faulty[rng.random(n) < 0.03] += 1e-8  # tiny: masked
    faulty[rng.random((n, classes)) < 0.01] = np.nan
    faulty[rng.random((n, classes)) < 0.005] = np.inf
    got = classify(golden, faulty)
    want = [reference(g, f) for g, f in zip(golden, faulty, strict=True)]
    assert got["outcome"].tolist() == [w[0] for w in want]
    assert got["sdc5"].tolist() == [w[1] for w in want]
    assert got["golden_top1"].tolist() == [w[2] for w in want]
    assert got["faulty_top1"].tolist() == [w[3] for w in want]
    assert set(got["outcome"].tolist()) == set(OUTCOMES)  # every class occurred
    assert set(error_buckets(got["rel_error"]).tolist()) <= set(BUCKETS)


def _graph_vs_numpy(golden, faulty, **tol):
    """The campaign's way (golden terms once, per-row quantities in a traced graph, finished
    in NumPy) equals classify bit for bit."""
    import tensorflow as tf

    from classes_tool.campaign.outcome_graph import classification_parts_graph
    from classes_tool.results.outcomes import finish_classification, golden_terms

    want = classify(golden, faulty, **tol)
    terms = golden_terms(golden, **tol)
    parts = tf.function(classification_parts_graph)(
        tf.constant(faulty), *(tf.constant(terms[k]) for k in ("golden", "top1", "bound")))
    got = finish_classification(**{k: v.numpy() for k, v in parts.items()},
                                golden_top1=terms["top1"], golden_at_top=terms["at_top"])
    assert np.asarray(OUTCOMES)[got["outcome"]].tolist() == want["outcome"].tolist()
    for key in ("sdc5", "golden_top1", "faulty_top1"):
        assert got[key].tolist() == want[key].tolist()
    np.testing.assert_array_equal(got["rel_error"], want["rel_error"])  # NaN, inf and bits
    return got


def test_in_graph_classification_equals_numpy_on_ties_nans_and_boundaries():
    rng = np.random.default_rng(3)
    n, classes = 800, 12
    golden = np.round(rng.random((n, classes)) * 4) / 4
    golden[:40, 0] = 0.0  # zero golden top score -> rel 0 or inf
    golden[:40, 1:] = -1.0
    faulty = golden.copy()
    hit = rng.random(n) < 0.7
    faulty[hit] = np.round((golden[hit] + rng.normal(0, 0.3, (hit.sum(), classes))) * 4) / 4
    faulty[rng.random(n) < 0.05] += 1e-8
    faulty[rng.random((n, classes)) < 0.01] = np.nan
    faulty[rng.random((n, classes)) < 0.005] = -np.inf
    faulty = faulty.astype(np.float32)  # what a network returns
    got = _graph_vs_numpy(golden, faulty)
    assert set(np.asarray(OUTCOMES)[got["outcome"]].tolist()) == set(OUTCOMES)
    assert np.isinf(got["rel_error"]).any() and np.isnan(got["rel_error"]).any()
    # exactly at the tolerance, and just beyond, in float64 as numpy does
    g = np.array([[0.5, 0.25], [0.5, 0.25]])
    f = np.array([[0.75, 0.25], [0.75 + 2**-20, 0.25]])
    got = _graph_vs_numpy(g, f, atol=0.25, rtol=0.0)
    assert np.asarray(OUTCOMES)[got["outcome"]].tolist() == ["masked", "tolerable_sdc"]
