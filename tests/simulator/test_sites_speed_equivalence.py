"""Site generation stays bit for bit what it was: stored campaigns replay site i exactly.

The digests were computed with the plain per-site implementation that the optimised one
replaced (sha256 of positions, value bits, splits and pattern names), recomputed when the
generators were made to satisfy the CLASSES classifier's class definitions (issue 17), and again
when quasi-shattered spans were placed beside the span the first two channels share and the last
draw of a shattered site started settling dense spans (issue 17, the sites of those two classes
only). Any drift in a draw, its order, or the arithmetic after it changes them.
"""

import hashlib

import numpy as np
import pytest

from classes_tool.simulator import patterns, sites
from classes_tool.simulator.error_model import ErrorModel, load_error_model, validate_error_model
from classes_tool.simulator.sites import generate_sites

# every spatial class, RANDOM choices, a key in both stats and keys, flip, "random" domains,
# zero weights and an even bin pair whose remainders tie (largest-remainder split)
SYNTHETIC = {
    "_note": "synthetic",
    "single": {"frequency": 0.05, "parameters": [{"keys": {}, "stats": {}, "conditional_frequency": 1}],
               "domain_classes": [{"nan": [100, 100], "count": 1, "frequency": 1}]},
    "same_row": {"frequency": 0.06, "parameters": [
        {"keys": {"row_corruption_pct": {"RANDOM": [[20, 30], [90, 100]]}, "max_cardinality": 9},
         "stats": {"min_value_skip": 1, "max_value_skip": {"RANDOM": [1, 3]}}, "conditional_frequency": 0.5},
        {"keys": {}, "stats": {}, "conditional_frequency": 0}],
        "domain_classes": [{"in_range": [50, 50], "out_of_range": [50, 50], "count": 1, "frequency": 1}]},
    "same_column": {"frequency": 0.06, "parameters": [
        {"keys": {"column_corruption_pct": [40, 60]}, "stats": {"min_value_skip": 2, "max_value_skip": 4},
         "conditional_frequency": 1}],
        "domain_classes": [{"random": [100, 100], "count": 2, "frequency": 1,
                            "values": {"in_range": 0.5, "flip": 0.2, "inf": 0.1, "zero": 0.2}}]},
    "bullet_wake": {"frequency": 0.06, "parameters": [
        {"keys": {"affected_channels_pct": [20, 60], "max_corrupted_channels": 5},
         "stats": {"min_channel_skip": {"RANDOM": [1, 2]}, "max_channel_skip": 3}, "conditional_frequency": 1}],
        "domain_classes": [{"zero": [10, 20], "in_range": [80, 90], "count": 1, "frequency": 0.5},
                           {"out_of_range": [0, 0], "count": 1, "frequency": 0.5}]},
    "skip_2": {"frequency": 0.06, "parameters": [
        {"keys": {"skip_amount": 2, "unique_channel_indexes": {"RANDOM": [2, 5, 9]}},
         "stats": {"indexes_corruption_pct": [50, 80], "affected_channels_pct": [10, 40]},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [60, 70], "out_of_range": [20, 30], "nan": [0, 10], "count": 1,
                            "frequency": 1}]},
    "skip_4": {"frequency": 0.06, "parameters": [
        {"keys": {"unique_channel_indexes": 8}, "stats": {"indexes_corruption_pct": [90, 100]},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [100, 100], "count": 1, "frequency": 1}]},
    "skip_8": {"frequency": 0.06, "parameters": [{"keys": {"unique_channel_indexes": 3}, "stats": {},
                                                  "conditional_frequency": 1}],
               "domain_classes": [{"flip": [40, 60], "out_of_range": [40, 60], "count": 1, "frequency": 1}]},
    "skip_16": {"frequency": 0.06, "parameters": [{"keys": {}, "stats": {}, "conditional_frequency": 1}],
                "domain_classes": [{"inf": [100, 100], "count": 1, "frequency": 1}]},
    "single_block": {"frequency": 0.06, "parameters": [
        {"keys": {"block_size": {"RANDOM": [4, 16, 64]}}, "stats": {"block_corruption_pct": [30, 90]},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [0, 100], "zero": [0, 100], "count": 1, "frequency": 1}]},
    "multi_channel_block": {"frequency": 0.06, "parameters": [
        {"keys": {"block_size": 8, "avg_block_corruption_pct": {"RANDOM": [[20, 30], [100, 100]]}},
         "stats": {"affected_channels_pct": [20, 50]}, "conditional_frequency": 1}],
        "domain_classes": [{"random": [100, 100], "count": 1, "frequency": 1, "values": {"in_range": 0.0}}]},
    "shattered_channel": {"frequency": 0.06, "parameters": [
        {"keys": {"min_span_width": {"RANDOM": [1, 3, 1719]}, "max_span_width": 6},
         "stats": {"avg_span_corruption_pct": [30, 70], "affected_channels_pct": [10, 50]},
         "conditional_frequency": 1}],
        "domain_classes": [{"out_of_range": [100, 100], "count": 1, "frequency": 1}]},
    "quasi_shattered_channel": {"frequency": 0.06, "parameters": [
        {"keys": {"min_span_width": 2, "max_span_width": {"RANDOM": [3, 40]}},
         "stats": {"avg_span_corruption_pct": {"RANDOM": [[30, 70], [100, 100]]},
                   "affected_channels_pct": [10, 50]}, "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [90, 100], "count": 1, "frequency": 1}]},
    "full_channels": {"frequency": 0.06, "parameters": [
        {"keys": {"avg_channel_corruption_pct": {"RANDOM": [[0, 10], [100, 100]]}},
         "stats": {"affected_channels_pct": [0, 30], "avg_channel_corruption_pct": [50, 60]},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [100, 100], "count": 1, "frequency": 1}]},
    "rectangles": {"frequency": 0.06, "parameters": [
        {"keys": {"rectangle_height": 2, "rectangle_width": 3}, "stats": {"affected_channels_pct": [10, 60]},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [70, 80], "out_of_range": [20, 30], "count": 1, "frequency": 1}]},
    "single_channel_random": {"frequency": 0.06, "parameters": [
        {"keys": {"channel_corruption_pct": [10, 40], "max_cardinality": {"RANDOM": [3, 12]}}, "stats": {},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [100, 100], "count": 1, "frequency": 1}]},
    "single_channel_alternated_blocks": {"frequency": 0.06, "parameters": [
        {"keys": {"block_size": 4, "min_block_skip": 2, "max_block_skip": 5}, "stats": {},
         "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [100, 100], "count": 1, "frequency": 1}]},
    "multiple_channels_uncategorized": {"frequency": 0.06, "parameters": [
        {"keys": {"min_errors_per_channel": {"RANDOM": [1, 2]}, "max_errors_per_channel": 7},
         "stats": {"affected_channels_pct": [10, 40]}, "conditional_frequency": 0.5},
        {"keys": {"avg_channel_corruption_pct": [1, 5]}, "stats": {}, "conditional_frequency": 0.5}],
        "domain_classes": [{"in_range": [100, 100], "count": 1, "frequency": 1}]},
}


# (error model, shape, value range, seed, first, count, digest); target "conv2" / "t" alternate
GOLDEN = [
    ("conv_gemm", (8, 8, 16), (-3.0, 3.0), 1, 0, 200, "33f7665faae8c663b83eb6f2d3d305ce"),
    ("conv_gemm", (32, 32, 16), (-3.0, 3.0), 7, 1000, 80, "4ef2a318cc928acf15b8e74ec5d0c709"),
    ("conv_gemm", (16, 16, 32), (0.0, 1.0), 3, 5, 80, "0bb06c8d862ec65fd1a757ba2e6c9c06"),
    ("conv_gemm", (10,), (2.0, 2.0), 11, 0, 60, "72344e45a8bc70e3e149ac2e34e1ca7d"),
    ("avgpool", (8, 8, 16), (0.0, 6.0), 2, 40, 60, "b3132cc138b8d744182dbcf4bc4e2bae"),
    ("batchnorm", (32, 32, 16), (-1.0, 1.0), 4, 0, 60, "fe2b1b3557da24e1d45a64883eaf3805"),
    ("bias_add", (2, 3, 4, 5), (-1.0, 2.0), 5, 17, 60, "dca0a9a0b91fba59c7da343a82db3da7"),
    ("clipped_relu", (16, 16, 32), (0.0, 6.0), 6, 0, 60, "5a8d6dd8c6f9f3ff353469fc776d9691"),
    ("elu", (8, 8, 16), (-1.0, 4.0), 8, 3, 60, "3e13667037afc6ca10bc15b36c8c9135"),
    ("maxpool", (64,), (0.0, 5.0), 9, 0, 60, "d544c07d49a5df31299f3f668f8b1741"),
    ("relu", (8, 8, 16), (0.0, 3.0), 10, 123456, 60, "9c2856696ca4cf00e718ddba6342a40c"),
    ("sigmoid", (5, 7, 3), (0.0, 1.0), 12, 0, 60, "ccafe782959e2df4d918c643e8ede728"),
    ("tanh", (12, 4), (-1.0, 1.0), 2**40 + 3, 0, 60, "2e1ba406107d6f8714d5cab226ab3809"),
    ("synthetic", (8, 8, 16), (-3.0, 3.0), 1, 0, 150, "1a9de6c69afedf1edf09fff51d63edd4"),
    ("synthetic", (64,), (-1e-4, 0.0), 2, 9, 100, "b17a337adf4065bc82c98b97099d96fe"),
    ("synthetic", (32, 32, 16), (1.0, 1.0), 3, 0, 60, "e822ee2630ae899b315dbb7d18df9515"),
]


def _model(name: str) -> ErrorModel:
    return ErrorModel("synthetic", SYNTHETIC) if name == "synthetic" else load_error_model(name)


def _digest(s: sites.SiteSet) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(s.positions, dtype="<i4").tobytes())
    h.update(np.ascontiguousarray(s.values, dtype="<f4").view("<u4").tobytes())
    h.update(np.ascontiguousarray(s.splits, dtype="<i4").tobytes())
    h.update("\n".join(s.patterns).encode())
    h.update(repr((s.positions.dtype.str, s.values.dtype.str, s.splits.dtype.str)).encode())
    return h.hexdigest()[:32]


def test_synthetic_model_is_valid():
    validate_error_model(SYNTHETIC, "synthetic")


@pytest.mark.parametrize("k", range(len(GOLDEN)))
def test_sites_match_the_original_implementation(k):
    name, shape, value_range, seed, first, count, digest = GOLDEN[k]
    target = "conv2" if k % 2 == 0 else "t"
    got = generate_sites(_model(name), target, shape, value_range, count, seed, first)
    assert _digest(got) == digest, f"{name} {shape}: sites drifted from the original draws"


@pytest.mark.parametrize("name, shape", [("conv_gemm", (8, 8, 16)), ("relu", (16, 16, 32)),
                                         ("synthetic", (5, 7, 3)), ("maxpool", (64,))])
def test_pieces_concatenate_to_one_draw(name, shape):
    model = _model(name)
    full = generate_sites(model, "conv2", shape, (-1.0, 2.0), 90, seed=4, first=3)
    # pieces small enough for default_rng and large enough for the batched generator states
    cuts = [3, 4, 11, 40, 93]
    parts = [generate_sites(model, "conv2", shape, (-1.0, 2.0), b - a, seed=4, first=a)
             for a, b in zip(cuts, cuts[1:], strict=False)]
    np.testing.assert_array_equal(np.concatenate([p.positions for p in parts]), full.positions)
    np.testing.assert_array_equal(np.concatenate([p.values.view(np.uint32) for p in parts]),
                                  full.values.view(np.uint32))
    assert sum((p.patterns for p in parts), []) == full.patterns
    lengths = np.concatenate([np.diff(p.splits) for p in parts])
    np.testing.assert_array_equal(lengths, np.diff(full.splits))


def test_exact_uniform_shortcut_draws_what_uniform_draws():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for low, high in [(0.0, 10.0), (75.0, 87.5), (12.5, 25.0), (90, 100), (5.0, 5.0), (-3, 2.5)]:
        for _ in range(50):
            assert patterns._uniform(a, low, high) == float(b.uniform(low, high))
    assert a.bit_generator.state == b.bit_generator.state


def test_pair_split_equals_the_numpy_split():
    rng = np.random.default_rng(1)
    shares = [[50.0, 50.0], [0.0, 0.0], [75.0, 25.0], [0.0, 12.5], [100.0, 0.0]]
    shares += [rng.uniform(0, 100, 2).tolist() for _ in range(300)]
    for share in shares:
        for n in (1, 2, 3, 7, 30, 31, 1000):
            pair = sites._split_pair(share, n)
            ref = sites._split(np.array(share), n).tolist()
            assert pair is None or pair == ref, (share, n)
    assert sites._split_pair([50.0, 50.0], 31) is None  # a tie: np.argsort decides


def test_plan_cache_sees_a_mutated_model():
    data = {"single": {"frequency": 1.0, "parameters": [{"keys": {}, "stats": {},
                                                         "conditional_frequency": 1}],
                       "domain_classes": [{"in_range": [100, 100], "frequency": 1}]}}
    model = ErrorModel("m", data)
    before = generate_sites(model, "t", (4, 4, 2), (0.0, 1.0), 20, seed=1)
    assert np.isfinite(before.values).all()
    data["single"]["domain_classes"][0] = {"nan": [100, 100], "frequency": 1}
    after = generate_sites(model, "t", (4, 4, 2), (0.0, 1.0), 20, seed=1)
    assert np.isnan(after.values).all()
