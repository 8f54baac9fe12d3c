"""Site generation: patterns on real shapes, value classes, determinism, validation."""

import json

import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.simulator.error_model import (
    available_error_models,
    error_model_for_layer,
    load_error_model,
)
from classes_tool.simulator.patterns import GENERATORS, generate_positions, map_shape
from classes_tool.simulator.sites import _value_classes, generate_sites, load_sites, save_sites

SHIPPED = ["avgpool", "batchnorm", "bias_add", "clipped_relu", "conv_gemm", "elu", "maxpool",
           "relu", "sigmoid", "tanh"]


def test_all_measured_models_are_shipped_and_valid():
    assert set(SHIPPED) <= set(available_error_models())
    for name in SHIPPED:
        assert load_error_model(name).classes


@pytest.mark.parametrize("shape", [(8, 8, 16), (5, 7, 3), (64,), (12, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("name", SHIPPED)
def test_sites_are_distinct_in_bounds_and_in_the_model_classes(name, shape):
    model = load_error_model(name)
    sites = generate_sites(model, "t", shape, (-1.0, 2.0), 40, seed=3)
    assert len(sites) == 40
    for i in range(len(sites)):
        pos, val = sites.site(i)
        assert len(pos) >= 1
        assert len(np.unique(pos)) == len(pos)
        assert pos.min() >= 0 and pos.max() < np.prod(shape)
        assert len(val) == len(pos)
    assert set(sites.patterns) <= set(model.classes)


def test_same_seed_same_sites_and_site_i_independent_of_count():
    model = load_error_model("conv_gemm")
    a = generate_sites(model, "conv1", (8, 8, 16), (0.0, 1.0), 50, seed=7)
    b = generate_sites(model, "conv1", (8, 8, 16), (0.0, 1.0), 10, seed=7)
    for i in range(10):
        np.testing.assert_array_equal(a.site(i)[0], b.site(i)[0])
        np.testing.assert_array_equal(a.site(i)[1], b.site(i)[1])
    c = generate_sites(model, "conv1", (8, 8, 16), (0.0, 1.0), 10, seed=8)
    assert any(not np.array_equal(a.site(i)[0], c.site(i)[0]) for i in range(10))


def test_pattern_geometry_on_hand_checked_cases():
    rng = np.random.default_rng(0)
    h, w, c = 6, 8, 5
    # bullet wake: one spatial position in several channels
    pos = generate_positions("bullet_wake", (h, w, c), {"affected_channels_pct": [40, 60]}, rng)
    assert len({p // c for p in pos}) == 1 and len({p % c for p in pos}) >= 2
    # same row: one channel, one row
    pos = generate_positions("same_row", (h, w, c), {"row_corruption_pct": [90, 100]}, rng)
    assert len({p % c for p in pos}) == 1 and len({(p // c) // w for p in pos}) == 1
    assert len(pos) >= 7
    # rectangles: height/width are last - first row/column (as measured): a 3x4 rectangle
    pos = generate_positions("rectangles", (h, w, c), {"rectangle_height": 2,
                             "rectangle_width": 3, "affected_channels_pct": [90, 100]}, rng)
    per_channel = {}
    for p in pos:
        per_channel.setdefault(p % c, set()).add(p // c)
    assert len(per_channel) == 5 and len({frozenset(v) for v in per_channel.values()}) == 1
    cells = next(iter(per_channel.values()))
    rows, cols = {m // w for m in cells}, {m % w for m in cells}
    assert len(cells) == 12 and len(rows) == 3 and len(cols) == 4
    # skip 4: positions 4 apart inside a channel
    pos = generate_positions("skip_4", (h, w, c), {"skip_amount": 4, "unique_channel_indexes": 5,
                             "indexes_corruption_pct": [100, 100],
                             "affected_channels_pct": [0, 10]}, rng)
    maps = sorted(p // c for p in pos)
    assert len(maps) == 5 and set(np.diff(maps)) == {4}


def test_every_generator_runs_on_a_dense_output():
    rng = np.random.default_rng(1)
    assert map_shape((64,)) == (1, 64, 1)
    for name in GENERATORS:
        pos = generate_positions(name, (64,), {}, rng)
        assert len(pos) >= 1 and pos.max() < 64


def test_value_classes_follow_bins_and_probabilities():
    rng = np.random.default_rng(0)
    labels = _value_classes(rng, 100, {"in_range": [70, 70], "out_of_range": [30, 30]})
    assert labels.count("in_range") == 70 and labels.count("out_of_range") == 30
    labels = _value_classes(rng, 20000, {"random": [100, 100],
                                         "values": {"in_range": 0.5, "nan": 0.5}})
    assert abs(labels.count("nan") - 10000) < 400  # ~5 sigma of a binomial(20000, .5)


def test_values_respect_the_range_per_class():
    model = load_error_model("conv_gemm")
    sites = generate_sites(model, "t", (8, 8, 16), (0.0, 2.0), 200, seed=0)
    v = sites.values
    assert np.isnan(v).any()  # conv_gemm's measured NaNs appear
    finite = v[np.isfinite(v)]
    assert (finite > 2.0).any() and ((finite >= 0) & (finite <= 2)).any()


def test_sites_file_round_trip(tmp_path):
    model = load_error_model("relu")
    sets = [generate_sites(model, name, (4, 4, 3), (0.0, 1.0), 5, seed=1)
            for name in ("a", "b")]
    save_sites(tmp_path / "s.npz", sets)
    back = load_sites(tmp_path / "s.npz")
    assert [s.target for s in back] == ["a", "b"]
    np.testing.assert_array_equal(back[1].values, sets[1].values)
    assert back[0].patterns == sets[0].patterns


def test_layer_mapping():
    assert error_model_for_layer("Conv2D", {}) == "conv_gemm"
    assert error_model_for_layer("Dense", {}) == "conv_gemm"
    assert error_model_for_layer("Activation", {"activation": "tanh"}) == "tanh"
    assert error_model_for_layer("ReLU", {"max_value": 6.0}) == "clipped_relu"
    assert error_model_for_layer("Flatten", {}) is None


def _bullet_wake(**stats):
    return json.dumps({"bullet_wake": {"frequency": 1, "parameters": [
        {"keys": {}, "stats": stats, "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [0, 100], "frequency": 1}]}})


@pytest.mark.parametrize("content, message", [
    (_bullet_wake(max_channel_skip="x"), r"max_channel_skip: expected a whole number"),
    (_bullet_wake(max_corrupted_channels=-3), r"max_corrupted_channels: expected a whole"),
    (_bullet_wake(min_channel_skip=0), r"min_channel_skip: expected a whole number"),
    (_bullet_wake(min_channel_skip={"RANDOM": [1, 2.5]}), r"min_channel_skip: expected a"),
    (_bullet_wake(affected_channels_pct=[50, 10]), r"affected_channels_pct: expected a "
                                                   r"percentage bin"),
])
def test_bad_parameter_values_fail_when_loaded(tmp_path, content, message):
    """Not only when a rare parameter set happens to be drawn (a campaign hours in)."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_error_model(path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "top level"),
    (json.dumps({"wobble": {"frequency": 1}}), "not a known spatial class"),
    (json.dumps({"single": {"frequency": 1, "parameters": [], "domain_classes": []}}),
     "parameters"),
    (json.dumps({"single": {"frequency": 1, "parameters": [
        {"keys": {}, "stats": {}, "conditional_frequency": 1}],
        "domain_classes": [{"in_range": [0, 120], "frequency": 1}]}}), "0..100"),
])
def test_malformed_error_models_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_error_model(path)


def test_unknown_error_model_name_lists_shipped_ones():
    with pytest.raises(UserError, match="conv_gemm"):
        load_error_model("warp_drive")
