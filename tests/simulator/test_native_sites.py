"""The compiled site generator (classes_tool/simulator/native_sites.py) against the Python
reference: the same generator states, and the same sites to the bit (positions, value bits,
splits, pattern names) for every shipped error model and every spatial class."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_sites_speed_equivalence import GOLDEN, SYNTHETIC, _digest, _model

from classes_tool.simulator import native_sites, patterns, sites
from classes_tool.simulator.error_model import ErrorModel, available_error_models, load_error_model
from classes_tool.simulator.sites import generate_sites

pytestmark = pytest.mark.skipif(native_sites.compiler() is None, reason="no C compiler")

SEEDS = (0, 1, 7, 2**31 + 5, 2**40)
FIRSTS = (0, 17, 123456)
RANGES = ((-3.0, 3.0), (0.0, 6.0), (2.5, 2.5), (-1e-4, 0.0))
SHAPES = ((1, 1, 1), (2, 3, 1), (1,), (64,), (12, 4), (8, 8, 16), (5, 7, 3), (2, 3, 4, 5),
          (32, 32, 64))


#: Sites C may leave to Python: none of a class (PYTHON_ONLY is empty), only the synthetic
#: same_row's even bin pair whose remainders tie on an odd count (np.argsort decides the tie).
LEFT_TO_PYTHON = native_sites.PYTHON_ONLY | {"same_row"}


@pytest.fixture(scope="module", autouse=True)
def library(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("CLASSES_TOOL_CACHE", str(tmp_path_factory.mktemp("cache")))
        m.delenv("CLASSES_TOOL_NATIVE", raising=False)
        path = native_sites.build()
        assert native_sites.build() == path  # built once
        lib = native_sites.load()
        assert lib is not None
        yield lib


@pytest.fixture
def python_sites(monkeypatch):
    """How many sites the C code left to Python, per pattern name."""
    left: dict[str, int] = {}
    splice = native_sites._with_python_sites

    def spy(plan, hwc, low, high, seed, crc, first, ws, kinds, names):
        got = splice(plan, hwc, low, high, seed, crc, first, ws, kinds, names)
        for kind, name in zip(kinds, got[3], strict=True):
            if kind < 0:
                left[name] = left.get(name, 0) + 1
        return got

    monkeypatch.setattr(native_sites, "_with_python_sites", spy)
    return left


def _python(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("CLASSES_TOOL_NATIVE", "0")
        assert native_sites.load() is None
        return generate_sites(*args, **kwargs)


def _same(a: sites.SiteSet, b: sites.SiteSet) -> bool:
    return (a.positions.dtype == b.positions.dtype and a.values.dtype == b.values.dtype
            and a.splits.dtype == b.splits.dtype
            and np.array_equal(a.positions, b.positions)
            and np.array_equal(a.values.view(np.uint32), b.values.view(np.uint32))
            and np.array_equal(a.splits, b.splits) and a.patterns == b.patterns)


def _outcome(fn):
    """The sites, or the type of the error raised."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (both paths must raise the same)
        return type(exc)


def test_generator_state_matches_numpy(library):
    out = np.zeros(6, dtype=np.uint64)
    for seed in (*SEEDS, 2**70 + 3, 2**95):
        for crc in (0, 5, 0xFFFFFFFF):
            for i in (0, 1, 123456, 2**32 + 1):
                entropy = [seed, crc, i]
                for draws in (0, 1, 2, 3):
                    rng = np.random.default_rng(entropy)
                    bg = rng.bit_generator
                    for _ in range(draws):  # 32-bit draws: one 64-bit output serves two
                        bg.ctypes.next_uint32(bg.ctypes.state)
                    words = np.concatenate([native_sites._words(v) for v in entropy])
                    words = words.astype("<u4")
                    library.classes_rng_state(words.ctypes.data, len(words), draws,
                                              out.ctypes.data)
                    o = [int(v) for v in out]
                    assert bg.state == {
                        "bit_generator": "PCG64",
                        "state": {"state": o[0] << 64 | o[1], "inc": o[2] << 64 | o[3]},
                        "has_uint32": o[4], "uinteger": o[5]}, (entropy, draws)


MODELS = [*available_error_models(), "synthetic"]


@pytest.mark.parametrize("name", MODELS)
def test_native_sites_equal_the_python_sites(monkeypatch, python_sites, name):
    model = _model(name)
    k = drawn = 0
    for shape in SHAPES:
        for value_range in RANGES:
            seed, first = SEEDS[k % len(SEEDS)], FIRSTS[k % len(FIRSTS)]
            count = 6 if shape == (32, 32, 64) else 30
            target = "conv2" if k % 2 else "t"
            args = (model, target, shape, value_range, count, seed, first)
            want = _python(monkeypatch, *args)
            got = generate_sites(*args)
            assert _same(got, want), (name, shape, value_range, seed, first)
            k += 1
            drawn += count
    # C draws every class, the redraws the classifier asks for included; it leaves to Python
    # only the synthetic same_row's tied remainders (Python's np.argsort decides them)
    assert set(python_sites) <= LEFT_TO_PYTHON, python_sites


def test_every_seed_and_offset(monkeypatch, python_sites):
    model = load_error_model("relu")
    for seed in (*SEEDS, sites.MAX_SEED):
        for first in (*FIRSTS, 2**32 - 3, 2**40):
            args = (model, "conv2", (8, 8, 4), (-1.0, 2.0), 12, seed, first)
            assert _same(generate_sites(*args), _python(monkeypatch, *args)), (seed, first)
    assert set(python_sites) <= LEFT_TO_PYTHON, python_sites


@pytest.mark.parametrize("seed", [-1, sites.MAX_SEED + 1, 2**200])
def test_seeds_outside_int64_are_refused(seed):
    """A seed must fit the ErrorSimulator's int64 weight, so every path refuses the same."""
    from classes_tool.errors import UserError

    with pytest.raises(UserError, match="the seed must be an integer in"):
        generate_sites(load_error_model("relu"), "conv2", (8, 8, 4), (-1.0, 2.0), 3, seed)


def _one_class(name: str, params: dict, domain: dict | None = None) -> ErrorModel:
    domain = domain or {"in_range": [40, 60], "out_of_range": [10, 30], "nan": [0, 5],
                        "inf": [0, 5], "zero": [5, 10], "count": 1, "frequency": 1}
    return ErrorModel(name, {name: {"frequency": 1.0, "parameters": [
        {"keys": params, "stats": {}, "conditional_frequency": 1}], "domain_classes": [domain]}})


def test_large_maps_wide_ranges_and_many_bins(monkeypatch, python_sites):
    """rng.choice's tail shuffle (more than 10000 map positions), integers beyond 32 bits,
    a five-bin value domain."""
    models = [
        _one_class("single_channel_random", {"channel_corruption_pct": [5, 30]}),
        _one_class("multiple_channels_uncategorized",
                   {"avg_channel_corruption_pct": [3, 8], "affected_channels_pct": [50, 100]}),
        _one_class("shattered_channel", {"min_span_width": 1, "max_span_width": 2**40,
                                         "affected_channels_pct": [50, 100]}),
        _one_class("same_row", {"row_corruption_pct": [0, 100], "min_value_skip": 1,
                                "max_value_skip": 2**35}),
    ]
    for model in models:
        for shape in ((128, 128, 2), (3, 5, 4)):
            args = (model, "t", shape, (-2.0, 1.0), 25, 3, 11)
            assert _same(generate_sites(*args), _python(monkeypatch, *args)), model.name
    assert set(python_sites) <= LEFT_TO_PYTHON, python_sites


def test_halfway_counts_round_to_even(monkeypatch, python_sites):
    """_count's round(): 2.5 -> 2, 3.5 -> 4 (bins of zero width land on halves)."""
    models = [_one_class("same_row", {"row_corruption_pct": [50, 50]}),
              _one_class("single_block", {"block_size": 7, "block_corruption_pct": [50, 50]}),
              _one_class("bullet_wake", {"affected_channels_pct": [50, 50]})]
    for model in models:
        for shape in ((3, 5, 7), (2, 7, 9), (4, 3, 5)):
            args = (model, "t", shape, (0.0, 1.0), 20, 5, 0)
            assert _same(generate_sites(*args), _python(monkeypatch, *args)), model.name
    assert set(python_sites) <= LEFT_TO_PYTHON, python_sites


def test_odd_parameters_and_unknown_classes_behave_as_in_python(monkeypatch):
    """Unvalidated models: whatever Python does (a result or an error), native does too."""
    odd = [
        _one_class("same_row", {"row_corruption_pct": ["1", 2], "max_cardinality": "3"}),
        _one_class("same_column", {"column_corruption_pct": [50, 10], "max_cardinality": 2.7,
                                   "min_value_skip": True, "max_value_skip": None}),
        _one_class("skip_4", {"skip_amount": None}),
        _one_class("skip_8", {"skip_amount": 2.5, "unique_channel_indexes": "4"}),
        _one_class("single_block", {"block_size": 0, "block_corruption_pct": None}),
        _one_class("rectangles", {"rectangle_height": 10**30, "rectangle_width": -3}),
        _one_class("single_channel_alternated_blocks", {"block_size": "x"}),
        _one_class("bullet_wake", {"affected_channels_pct": [0, 1e300]}),
        _one_class("full_channels", {"avg_channel_corruption_pct": {"RANDOM": []}}),
        _one_class("single", {}, {"in_range": [float("nan"), 1], "count": 1, "frequency": 1}),
        _one_class("single", {}, {"zero": [1, 2], "nan": [1, 2], "count": 1, "frequency": 1}),
        _one_class("single", {}, {"count": 1, "frequency": 1}),
        ErrorModel("bogus", {"single": {**SYNTHETIC["single"], "frequency": 0.3},
                             "bogus": {**SYNTHETIC["single"], "frequency": 0.7}}),
        ErrorModel("weights", {"single": {**SYNTHETIC["single"], "frequency": -1.0},
                               "bullet_wake": {**SYNTHETIC["bullet_wake"], "frequency": 0.0}}),
    ]
    for model in odd:
        for shape in ((6, 5, 4), (1,)):
            args = (model, "t", shape, (-1.0, 1.0), 20, 2, 0)
            want = _outcome(lambda a=args: _python(monkeypatch, *a))
            got = _outcome(lambda a=args: generate_sites(*a))
            if isinstance(want, type):
                assert got is want, model.name
            else:
                assert not isinstance(got, type) and _same(got, want), model.name
    with pytest.raises(KeyError):
        generate_sites(odd[-2], "t", (4, 4, 4), (0.0, 1.0), 50, 1)


def test_rng_uniform_path(monkeypatch):
    """Where low + span * random() would round differently from rng.uniform (a fused
    multiply-add), the Python code calls rng.uniform, and so does the native path."""
    monkeypatch.setattr(patterns, "AFFINE_UNIFORM", False)
    monkeypatch.setattr(sites, "AFFINE_UNIFORM", False)
    monkeypatch.setattr(sites, "_PLANS", {})
    for name in ("conv_gemm", "synthetic", "maxpool"):
        args = (_model(name), "conv2", (8, 8, 16), (-3.0, 3.0), 80, 1, 5)
        assert _same(generate_sites(*args), _python(monkeypatch, *args)), name


def test_disabled_gives_the_python_path(monkeypatch):
    model = load_error_model("conv_gemm")
    monkeypatch.setenv("CLASSES_TOOL_NATIVE", "0")
    assert native_sites.load() is None
    plan = sites._plan(model)
    assert native_sites.draw(plan, (8, 8, 16), -3.0, 3.0, 1, "conv2", 0, 10) is None
    python = generate_sites(model, "conv2", (8, 8, 16), (-3.0, 3.0), 40, 1)
    monkeypatch.delenv("CLASSES_TOOL_NATIVE")
    assert native_sites.load() is not None
    assert native_sites.draw(plan, (8, 8, 16), -3.0, 3.0, 1, "conv2", 0, 10) is not None
    assert _same(generate_sites(model, "conv2", (8, 8, 16), (-3.0, 3.0), 40, 1), python)


@pytest.mark.parametrize("k", range(len(GOLDEN)))
def test_reference_digests_hold_with_the_native_path(python_sites, k):
    assert native_sites.load() is not None
    name, shape, value_range, seed, first, count, digest = GOLDEN[k]
    target = "conv2" if k % 2 == 0 else "t"
    got = generate_sites(_model(name), target, shape, value_range, count, seed, first)
    assert _digest(got) == digest
    assert sum(v for k, v in python_sites.items() if k not in LEFT_TO_PYTHON) <= count // 10


def test_pieces_and_a_mutated_model(monkeypatch):
    model = ErrorModel("synthetic", copy.deepcopy(SYNTHETIC))
    full = generate_sites(model, "conv2", (5, 7, 3), (-1.0, 2.0), 90, seed=4, first=3)
    parts = [generate_sites(model, "conv2", (5, 7, 3), (-1.0, 2.0), b - a, seed=4, first=a)
             for a, b in [(3, 4), (4, 50), (50, 93)]]
    assert np.array_equal(np.concatenate([p.positions for p in parts]), full.positions)
    assert sum((p.patterns for p in parts), []) == full.patterns
    model.data["single"]["domain_classes"][0] = {"zero": [100, 100], "frequency": 1}
    args = (model, "conv2", (5, 7, 3), (-1.0, 2.0), 90, 4, 3)
    assert _same(generate_sites(*args), _python(monkeypatch, *args))


def _one_set(model: str, name: str, i: int) -> ErrorModel:
    spec = copy.deepcopy(load_error_model(model).data[name])
    spec["parameters"] = [dict(spec["parameters"][i], conditional_frequency=1.0)]
    return ErrorModel(f"{model}-{name}-{i}", {name: dict(spec, frequency=1.0)})


#: the oracle's shapes (maps smaller than a block, 2 and 3 channels: redraws are frequent) and
#: a dense output
CLASS_SHAPES = ((10, 10, 2), (5, 7, 3), (3, 3, 16), (4, 4, 64), (9, 12, 16), (2, 2, 3), (64,))


@pytest.mark.parametrize("model", available_error_models())
def test_every_class_and_parameter_set_is_drawn_in_c(monkeypatch, python_sites, model):
    """Each spatial class and parameter set alone, where the redraw-until-classified loop runs
    most: the same sites as Python, and C leaves none of them to Python."""
    data = load_error_model(model).data
    for name in (n for n in data if not n.startswith("_")):
        for i in range(len(data[name]["parameters"])):
            one = _one_set(model, name, i)
            for k, shape in enumerate(CLASS_SHAPES):
                args = (one, "t", shape, (-1.0, 2.0), 25, i, 40 * k)
                assert _same(generate_sites(*args), _python(monkeypatch, *args)), \
                    (model, name, i, shape)
    assert not python_sites, python_sites


def test_settled_draws(monkeypatch, python_sites):
    """The last draw of a shattered or quasi-shattered site settles dense spans (cuts the
    leader of a multi-channel block until there is none): with two draws a site, most sites
    that need a second one are settled, the same in C as in Python."""
    monkeypatch.setattr(patterns, "MAX_ATTEMPTS", 2)
    monkeypatch.setattr(sites, "_PLANS", {})
    cases = [("bias_add", "shattered_channel"), ("bias_add", "quasi_shattered_channel"),
             ("conv_gemm", "shattered_channel"), ("avgpool", "quasi_shattered_channel")]
    for model, name in cases:
        for i in range(len(load_error_model(model).data[name]["parameters"])):
            for shape in ((4, 4, 64), (10, 10, 2), (5, 7, 3), (9, 12, 16), (16, 16, 8)):
                args = (_one_set(model, name, i), "t", shape, (-1.0, 2.0), 30, i, 5)
                assert _same(generate_sites(*args), _python(monkeypatch, *args)), \
                    (model, name, i, shape)
    assert not python_sites, python_sites


def test_rectangles_over_half_the_map(monkeypatch, python_sites):
    """A rectangle that fills more than half of the map leaves out cells of one channel: one
    channel alone (at most 2 cells), a few (a mask per channel) and many channels."""
    models = [_one_class("rectangles", {"rectangle_height": h, "rectangle_width": w,
                                        "affected_channels_pct": pct})
              for h, w, pct in ((2, 2, [90, 100]), (4, 6, [0, 60]), (3, 2, [20, 40]))]
    for model in models:
        for shape in ((4, 4, 1), (4, 4, 64), (6, 8, 2), (6, 8, 3), (5, 5, 7), (3, 4, 16)):
            args = (model, "t", shape, (-2.0, 1.0), 30, 4, 1)
            assert _same(generate_sites(*args), _python(monkeypatch, *args)), (model.name, shape)
    assert not python_sites, python_sites


def test_edge_parameters_of_the_new_generators(monkeypatch, python_sites):
    """Corners of the generators: counts far above the map (uncategorized's levelling), a
    leader that keeps the window's first position, spans of width 0, gaps wider than the map,
    one-row maps, blocks larger than the map."""
    models = [
        _one_class("multiple_channels_uncategorized",
                   {"min_errors_per_channel": 10**12, "affected_channels_pct": [50, 100]}),
        _one_class("multiple_channels_uncategorized",
                   {"avg_channel_corruption_pct": [60, 90], "max_errors_per_channel": 3,
                    "min_errors_per_channel": 7}),
        _one_class("multi_channel_block", {"block_size": 64, "avg_block_corruption_pct": [0, 10],
                                           "affected_channels_pct": [0, 100]}),
        _one_class("shattered_channel", {"min_span_width": 0, "max_span_width": 40,
                                         "avg_span_corruption_pct": [10, 60]}),
        _one_class("quasi_shattered_channel", {"min_span_width": 3, "max_span_width": 1,
                                               "avg_span_corruption_pct": [0, 30],
                                               "affected_channels_pct": [50, 100]}),
        _one_class("single_channel_random", {"channel_corruption_pct": [1, 99],
                                             "min_value_skip": 0, "max_value_skip": 10**9}),
        _one_class("single_channel_alternated_blocks", {"block_size": 1, "max_block_skip": 5}),
        _one_class("single_block", {"block_size": 32, "block_corruption_pct": [0, 5]}),
        _one_class("full_channels", {"avg_channel_corruption_pct": [0, 100]}),
        _one_class("rectangles", {"rectangle_height": 5, "rectangle_width": 0}),
        _one_class("same_column", {"column_corruption_pct": [0, 10]}),
    ]
    for model in models:
        for shape in ((1, 9, 4), (3, 3, 3), (6, 40, 5), (1,), (17, 2, 1)):
            args = (model, "t", shape, (-2.0, 1.0), 30, 9, 3)
            assert _same(generate_sites(*args), _python(monkeypatch, *args)), (model.name, shape)
    assert not python_sites, python_sites


def test_classify_matches_patterns_classify(library):
    """C's classifier (the redraw loop's test) against patterns.classify on the sites of every
    class and on the same sites with positions added or removed."""
    rng = np.random.default_rng(5)
    names = {k: name for name, k in native_sites.CHECKED.items()}
    seen = set()
    for model in ("conv_gemm", "bias_add", "maxpool"):
        for shape in ((5, 7, 3), (4, 4, 64), (9, 12, 16), (1, 40, 2), (10, 10, 2)):
            h, w, c = patterns.map_shape(shape)
            drawn = generate_sites(load_error_model(model), "t", shape, (0.0, 1.0), 150, 1)
            for j in range(len(drawn)):
                pos = drawn.site(j)[0].astype(np.int64)
                variants = [pos, pos[rng.random(len(pos)) < 0.8],
                            np.union1d(pos, rng.integers(0, h * w * c, 3))]
                for v in variants:
                    if len(v) == 0:
                        continue
                    v = rng.permutation(v)  # any order
                    got = library.classes_classify(np.ascontiguousarray(v).ctypes.data, len(v),
                                                   h, w, c)
                    want = patterns.classify(v, h, w, c)
                    assert names[got] == want, (model, shape, sorted(v.tolist()))
                    seen.add(want)
    assert len(seen) >= 11, seen
    assert library.classes_classify(np.zeros(1, dtype=np.int64).ctypes.data, 0, 2, 2, 2) == -1
