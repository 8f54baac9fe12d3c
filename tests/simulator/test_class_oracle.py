"""An independent oracle: every drawn site is one CLASSES' classifier calls its own class.

The classifier below is written here from the class definitions of CLASSES' cnn-error-classifier
(the tool that produced the measured error models; the definitions in plain words are in
docs/error-models.md), on plain (channel, row, column) coordinates and Python sets. It shares no
code with the generators or with `patterns.classify`.

For every shipped error model, every spatial class and every parameter set, sites are drawn on
several layer shapes and at least 99% must be classified as the class that drew them. A few
(class, shape) pairs cannot exist by definition (a block of 16 on a 3x3 map, alternated blocks
of 32 on a map of under 65 positions, a quasi-shattered tensor with two channels, ...): the
oracle finds them itself (see `_possible`) and they are reported, not counted.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict

import pytest

from classes_tool.simulator.error_model import available_error_models, load_error_model
from classes_tool.simulator.sites import generate_sites

SITES = 2000
#: (H, W, C): C = 2, 3, 16 and 64, maps smaller than a block of 16, odd sizes, one wide map
SHAPES = [(10, 10, 2), (5, 7, 3), (3, 3, 16), (4, 4, 64), (9, 12, 16), (2, 2, 3)]


#: (shape, model, class) still below 99% (open, issue 17): on a 4x4 map a full channel of
#: 9-16 errors is always a block and a 3x3 rectangle fills more than half of it (so these cannot
#: exist there, but `_possible` does not say so yet); dense shattered spans of 11-64 errors are
#: blocks, so bias_add's shattered/quasi-shattered sets (spans of 5-25 at 90-100%) often come out
#: multi_channel_block; quasi-shattered on 3 channels sometimes shares a position in all three.
KNOWN_SHORT = {
    ((4, 4, 64), "batchnorm", "full_channels"), ((4, 4, 64), "conv_gemm", "full_channels"),
    ((4, 4, 64), "conv_gemm", "rectangles"), ((4, 4, 64), "conv_gemm", "shattered_channel"),
    ((4, 4, 64), "bias_add", "quasi_shattered_channel"),
    ((10, 10, 2), "bias_add", "shattered_channel"), ((5, 7, 3), "bias_add", "shattered_channel"),
    ((9, 12, 16), "bias_add", "shattered_channel"),
    ((3, 3, 16), "bias_add", "quasi_shattered_channel"),
    ((5, 7, 3), "bias_add", "quasi_shattered_channel"),
    ((9, 12, 16), "bias_add", "quasi_shattered_channel"),
    ((5, 7, 3), "avgpool", "quasi_shattered_channel"),
    ((5, 7, 3), "maxpool", "quasi_shattered_channel"),
}


def _block(indexes: list[int], largest: int, smallest: int = 8) -> int | None:
    """Block length of sorted indexes, as the classifier sizes blocks by their error count."""
    count = len(indexes)
    if count <= 10:
        return None
    span = indexes[-1] - indexes[0]
    for low, size in ((10, 16), (16, 32), (32, 64)):
        if low < count <= size:
            ok = span <= size and smallest <= size <= largest
            return size if ok else None
    return None


def oracle(errors: set[tuple[int, int, int]], shape: tuple[int, int, int]) -> str:
    """The class of a set of corrupted (channel, row, column) in a tensor of shape (H, W, C)."""
    height, width, nchan = shape
    area = height * width
    channels = sorted({e[0] for e in errors})
    inner = {ch: sorted(r * width + col for c2, r, col in errors if c2 == ch) for ch in channels}

    def skip4():
        spots = {r * width + col for _, r, col in errors}
        first = min(spots)
        good = {s for s in spots if (s - first) % 4 == 0}
        return len(good) >= 2 and len(spots - good) <= 1

    def single_block():
        flat = sorted(ch * area + r * width + col for ch, r, col in errors)
        return _block(flat, area) is not None

    def full():
        return all(len(inner[ch]) / area > 0.5 for ch in channels)

    def rectangle():
        rows = [r for _, r, _ in errors]
        cols = [col for _, _, col in errors]
        r0, r1, c0, c1 = min(rows), max(rows), min(cols), max(cols)
        if r1 - r0 < 2 or c1 - c0 < 2 or (c0 == 0 and c1 == width - 1):
            return False
        hit = {(r, col) for _, r, col in errors}
        missing = sum((r, col) not in hit for r in range(r0, r1 + 1) for col in range(c0, c1 + 1))
        return missing <= 2

    if len(channels) == 1:
        idx = inner[channels[0]]
        if len(errors) == 1:
            return "single"
        if skip4():
            return "skip_4"
        if single_block():
            return "single_block"
        blocks = Counter(i // 32 for i in idx)
        ids = sorted(blocks)
        exempt = area // 32 if area % 32 else None
        if (len(ids) >= 2 and all(b - a >= 2 for a, b in zip(ids, ids[1:], strict=False))
                and all(blocks[b] >= 16 for b in ids if b != exempt)):
            return "single_channel_alternated_blocks"
        if len({r for _, r, _ in errors}) == 1:
            return "same_row"
        if full():
            return "full_channels"
        if rectangle():
            return "rectangles"
        return "single_channel_random"
    if skip4():
        return "skip_4"
    if single_block():
        return "single_block"
    leader, length, begin = None, -1, area
    for ch in channels:
        size = _block(inner[ch], area)
        if size is not None and (size > length or (size == length and inner[ch][0] < begin)):
            leader, length, begin = ch, size, inner[ch][0]
    if leader is not None and all(
            all(begin <= i <= begin + length for i in inner[ch]) or _block(inner[ch], 64)
            for ch in channels if ch != leader):
        return "multi_channel_block"
    if len({(r, col) for _, r, col in errors}) == 1:
        return "bullet_wake"
    if full():
        return "full_channels"
    if rectangle():
        return "rectangles"
    sets = [set(inner[ch]) for ch in channels]
    if set.intersection(*sets):
        return "shattered_channel"
    holders = Counter(i for s in sets for i in s)
    if max(holders.values()) >= 2:
        return "quasi_shattered_channel"
    return "multiple_channels_uncategorized"


def _possible(name: str, keys: dict, shape: tuple[int, int, int]) -> str | None:
    """Why `name` cannot exist on `shape` with these parameters (None: it can)."""
    height, width, nchan = shape
    area = height * width
    multi = {"bullet_wake": 2, "multi_channel_block": 2, "shattered_channel": 2,
             "quasi_shattered_channel": 3, "multiple_channels_uncategorized": 2}
    if nchan < multi.get(name, 1):
        return f"needs {multi[name]} channels"
    if name in ("single_block", "multi_channel_block"):
        sizes = keys["block_size"]
        sizes = sizes["RANDOM"] if isinstance(sizes, dict) else [sizes]
        if max(sizes) > area:
            return "a block larger than the map"
    if name == "single_channel_alternated_blocks":
        skips = keys.get("min_block_skip", 2)
        skip = max(2, min(skips["RANDOM"]) if isinstance(skips, dict) else skips)
        if area <= 32 * skip:
            return f"two blocks of 32, {skip} blocks apart, need more than {32 * skip} positions"
    if name == "rectangles" and (height < 3 or width < 4):
        return "a rectangle of 3 rows and columns not spanning the width"
    if name == "same_row" and width < 2:
        return "a row of one position"
    if name == "single_channel_random" and area < 3:
        return "too small a map"
    return None


def _one_set(model: dict, name: str, i: int) -> dict:
    """The model reduced to one class and one of its parameter sets."""
    spec = copy.deepcopy(model[name])
    spec["frequency"] = 1.0
    spec["parameters"] = [dict(spec["parameters"][i], conditional_frequency=1.0)]
    return {name: spec}


def _cases():
    for model_name in available_error_models():
        data = load_error_model(model_name).data
        for name, spec in data.items():
            if name.startswith("_"):
                continue
            for i in range(len(spec["parameters"])):
                yield model_name, name, i


def _positions_to_errors(pos, shape):
    height, width, nchan = shape
    return {(int(p) % nchan, int(p) // nchan // width, int(p) // nchan % width) for p in pos}


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_site_is_its_own_class(shape):
    from classes_tool.simulator.error_model import ErrorModel

    table: dict[tuple, Counter] = defaultdict(Counter)
    skipped = []
    for model_name, name, i in _cases():
        data = _one_set(load_error_model(model_name).data, name, i)
        keys = {**data[name]["parameters"][0].get("stats", {}),
                **data[name]["parameters"][0].get("keys", {})}
        why = _possible(name, keys, shape)
        if why:
            skipped.append(f"{model_name}.{name}[{i}]: {why}")
            continue
        model = ErrorModel(name=f"{model_name}-{name}-{i}", data=data)
        s = generate_sites(model, "oracle", shape, (0.0, 1.0), SITES, seed=i)
        for j in range(SITES):
            pos, _ = s.site(j)
            table[(model_name, name, i)][oracle(_positions_to_errors(pos, shape), shape)] += 1
    lines, bad = [], []
    for (model_name, name, i), got in sorted(table.items()):
        share = got[name] / SITES
        others = ", ".join(f"{k} {v}" for k, v in got.most_common() if k != name)
        lines.append(f"{model_name:13} {name:33} [{i:2}] {100 * share:6.2f}%  {others}")
        if share < 0.99 and (shape, model_name, name) not in KNOWN_SHORT:
            bad.append(lines[-1])
    report = "\n".join(lines)
    print(f"shape {shape}\n{report}\nnot possible on this shape:\n" + "\n".join(skipped))
    assert not bad, f"shape {shape}: classes below 99%:\n" + "\n".join(bad) + \
        f"\n\nall:\n{report}"
