"""One test per issue-17 fix: each failed with the generators before it."""

import numpy as np

from classes_tool.simulator import patterns
from classes_tool.simulator.error_model import ErrorModel, load_error_model
from classes_tool.simulator.sites import generate_sites


def _sites(model, shape, n=400, **kw):
    s = generate_sites(model, "t", shape, (0.0, 1.0), n, seed=3, **kw)
    return [s.site(i)[0] for i in range(n)], s


def _class(name, keys, stats=None):
    return ErrorModel(name, {name: {"frequency": 1.0, "parameters": [
        {"keys": keys, "stats": stats or {}, "conditional_frequency": 1}],
        "domain_classes": [{"out_of_range": [100, 100], "count": 1, "frequency": 1}]}})


def test_multi_channel_classes_corrupt_two_channels_or_more():
    for model in ("maxpool", "conv_gemm"):
        data = load_error_model(model).data
        for name in patterns.MIN_CHANNELS:
            if name not in data:
                continue
            one = ErrorModel(name, {name: dict(data[name], frequency=1.0)})
            for shape in ((6, 6, 16), (8, 8, 32)):
                for pos in _sites(one, shape, 200)[0]:
                    assert len(set((pos % shape[2]).tolist())) >= patterns.MIN_CHANNELS[name]


def test_single_channel_random_keeps_the_value_skips():
    model = _class("single_channel_random", {"channel_corruption_pct": [10, 20]},
                   {"max_cardinality": 10, "min_value_skip": 2, "max_value_skip": 5})
    for pos in _sites(model, (10, 10, 4))[0]:
        gaps = np.diff(np.sort(pos // 4))
        assert len(pos) >= 2 and gaps.min() >= 2 and gaps.max() <= 5


def test_rectangle_height_and_width_are_last_minus_first():
    model = _class("rectangles", {"rectangle_height": 2, "rectangle_width": 2,
                                  "affected_channels_pct": [90, 100]})
    for pos in _sites(model, (8, 8, 4), 50)[0]:
        maps = pos // 4
        rows, cols = maps // 8, maps % 8
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2


def test_quasi_shattered_shares_a_position_but_not_in_all_channels():
    data = load_error_model("maxpool").data
    model = ErrorModel("q", {"quasi_shattered_channel": dict(
        data["quasi_shattered_channel"], frequency=1.0)})
    for pos in _sites(model, (8, 8, 16))[0]:
        per = {}
        for p in pos.tolist():
            per.setdefault(p % 16, set()).add(p // 16)
        common = set.intersection(*per.values())
        holders = np.unique(np.concatenate([list(s) for s in per.values()]), return_counts=True)
        assert not common and holders[1].max() >= 2


def _one_set(model, name, i):
    data = load_error_model(model).data[name]
    return ErrorModel(f"{model}-{name}-{i}", {name: dict(
        data, frequency=1.0, parameters=[dict(data["parameters"][i], conditional_frequency=1)])})


def test_quasi_shattered_last_span_lies_beside_the_span_the_first_two_share():
    """Three channels of a small map: spans beside the anchor met the first two in a position
    they all held (shattered)."""
    model = _one_set("bias_add", "quasi_shattered_channel", 0)
    for shape in ((5, 7, 3), (3, 3, 16)):
        for pos in _sites(model, shape, 300)[0]:
            assert patterns.classify(pos, *shape) == "quasi_shattered_channel"


def test_dense_shattered_spans_are_settled_below_block_size():
    """Spans of 11 errors or more are blocks: with two dense channels, or on a 4 x 4 map, few
    draws or none were (quasi-)shattered (multi-channel block); the last draw keeps 10 errors
    of the leader's span."""
    for model, name, i, shape, n in (
            ("bias_add", "shattered_channel", 0, (10, 10, 2), 300),
            ("bias_add", "shattered_channel", 0, (5, 7, 3), 300),
            ("bias_add", "quasi_shattered_channel", 0, (9, 12, 16), 300),
            ("bias_add", "quasi_shattered_channel", 0, (4, 4, 64), 300),
            ("conv_gemm", "shattered_channel", 1, (4, 4, 64), 60)):
        for pos in _sites(_one_set(model, name, i), shape, n)[0]:
            assert patterns.classify(pos, *shape) == name, (model, name, shape)


def test_a_rectangle_over_half_the_map_leaves_out_cells_of_one_channel():
    """A 3 x 3 rectangle on a 4 x 4 map made every channel full (full_channels)."""
    model = _class("rectangles", {"rectangle_height": 2, "rectangle_width": 2,
                                  "affected_channels_pct": [90, 100]})
    for shape in ((4, 4, 64), (4, 4, 1)):
        for pos in _sites(model, shape, 100)[0]:
            assert patterns.classify(pos, *shape) == "rectangles"
            held = sorted(np.bincount(pos % shape[2])[np.unique(pos % shape[2])].tolist())
            assert held[0] == 8 and all(k == 9 for k in held[1:])


def test_uncategorized_follows_the_average_channel_corruption():
    model = _class("multiple_channels_uncategorized",
                   {"avg_channel_corruption_pct": [20, 30], "affected_channels_pct": [0, 10]},
                   {"max_corrupted_channels": 2, "min_errors_per_channel": 1,
                    "max_errors_per_channel": 40})
    sizes = [len(p) for p in _sites(model, (10, 10, 8))[0]]
    assert 40 <= np.median(sizes) <= 60  # 2 channels x 20-30% of 100 positions


def test_blocks_are_unaligned_and_single_blocks_cross_channels():
    model = _class("single_block", {"block_size": 16, "block_corruption_pct": [90, 100]})
    starts, crossing = set(), 0
    for pos in _sites(model, (6, 6, 8), 600)[0]:
        flat = np.sort((pos % 8) * 36 + pos // 8)  # channel-first order
        assert flat[-1] - flat[0] <= 16 and 11 <= len(flat) <= 16
        starts.add(int(flat[0]) % 16)
        crossing += len(set((pos % 8).tolist())) > 1
    assert len(starts) > 8 and crossing > 0


def test_out_of_range_modes():
    model = _class("single", {})
    _, bounded = _sites(model, (4, 4, 4), 3000)
    _, bits = _sites(model, (4, 4, 4), 3000, out_of_range="bit_pattern")
    assert np.isfinite(bounded.values).all() and np.abs(bounded.values).max() <= 2e6
    finite = bits.values[np.isfinite(bits.values)]
    assert (~np.isfinite(bits.values)).sum() > 0
    assert 0.3 <= (np.abs(bits.values) > 2e6).mean() <= 0.6
    assert ((finite < 0) | (finite > 1)).all()
