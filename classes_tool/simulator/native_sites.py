"""An optional compiled site generator: `generate_sites` in C, bit for bit the Python result.

Why: drawing a site in Python costs ~100 us (a few dozen tiny NumPy calls), which is most of a
campaign's host work on small models. `native/draw_sites.c` rebuilds each site's generator
(SeedSequence -> PCG64, as NumPy does) and makes the same draws through NumPy's own C
distributions (`libnpyrandom`), so positions, value bits, splits and pattern names are the same.

A site the C code does not cover (an unusual parameter, an argsort tie, anything Python would
reject) is marked and redrawn here with the reference code from its own generator, which gives
the same result. Out-of-range values are finished here with NumPy's `10.0 ** u`, which may use
SIMD code that C's pow does not match.

Like the write kernel (`native.py`) it is built only on request (`classes-tool build-native`),
per NumPy version, source and flags, into the same cache folder; ``CLASSES_TOOL_NATIVE=0``
turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import threading
import weakref
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.simulator import native, patterns

SOURCE = Path(__file__).with_name("native") / "draw_sites.c"

_loaded: dict[str, Any] = {}


def _numpy_random_lib() -> Path:
    return Path(np.random.__file__).parent / "lib" / "libnpyrandom.a"


def _flags() -> list[str]:
    # -ffp-contract=off: no fused multiply-add, NumPy rounds each operation
    return ["-shared", "-fPIC", "-O2", "-ffp-contract=off", "-fno-fast-math", "-w",
            f"-I{np.get_include()}"]


def _link() -> list[str]:
    return [str(_numpy_random_lib()), "-lm", "-Wl,--exclude-libs,ALL"]


@functools.cache
def _library_name() -> str:
    """The file name for this NumPy, these flags and this source (fixed for a process)."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(_flags() + _link()).encode())
    return f"draw_sites-np{np.__version__}-{key.hexdigest()[:12]}.so"


def library_path() -> Path:
    return native.cache_dir() / _library_name()


def compiler() -> str | None:
    return native.find_program("CC", ("cc", "gcc", "clang"))


def build(force: bool = False) -> Path:
    """Compile the site generator (a second or two) unless it is already built."""
    path = library_path()
    if path.exists() and not force:
        return path
    cc = compiler()
    if cc is None:
        raise UserError("no C compiler found (set CC); sites are drawn in Python")
    if not _numpy_random_lib().is_file():
        raise UserError("this NumPy ships no libnpyrandom.a; sites are drawn in Python")
    native.compile_library(path, lambda out: [cc, *_flags(), str(SOURCE), "-o", out, *_link()],
                           "native site generator")
    _loaded.pop(str(path), None)  # a process that looked before the build may load it now
    _by_environment.clear()
    return path


def enabled() -> bool:
    return native.enabled()


_by_environment: dict[tuple[str | None, str | None], Any] = {}


def load():
    """The loaded library, or None (not built, disabled, or failing to load)."""
    env = (os.environ.get("CLASSES_TOOL_NATIVE"), os.environ.get("CLASSES_TOOL_CACHE"))
    lib = _by_environment.get(env)  # a look-up per call: the path takes 10 us to build
    if lib is None:
        lib = _by_environment[env] = _load() or False
    return lib or None


def _load():
    if not enabled():
        return None
    key = str(library_path())
    if key not in _loaded:
        lib = None
        if os.path.exists(key):
            try:
                lib = ctypes.CDLL(key)
                lib.classes_draw_sites.restype = ctypes.c_int64
                lib.classes_draw_sites.argtypes = [
                    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                    ctypes.c_double, ctypes.c_double, ctypes.c_void_p, ctypes.c_int64,
                    ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
                lib.classes_finish_out_of_range.restype = None
                lib.classes_finish_out_of_range.argtypes = [
                    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                    ctypes.c_int64, ctypes.c_double, ctypes.c_double, ctypes.c_double]
                lib.classes_classify.restype = ctypes.c_int64
                lib.classes_classify.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 4
                lib.classes_rng_state.restype = None
                lib.classes_rng_state.argtypes = [ctypes.c_void_p, ctypes.c_int64,
                                                  ctypes.c_int64, ctypes.c_void_p]
            except (OSError, AttributeError):
                lib = None
        _loaded[key] = lib
    return _loaded[key]


# --- the error model, flattened for C (mirrors the structs of draw_sites.c) -----------------

_SLOT = np.dtype([("tag", "<i8"), ("i", "<i8"), ("lo", "<f8"), ("span", "<f8")])
_CHOICE = np.dtype([("off", "<i8"), ("n", "<i8"), ("sorted", "<i8"), ("total", "<f8")])
_CLASS = np.dtype([(k, "<i8") for k in ("gen", "param_choice", "param_off", "domain_choice",
                                         "domain_off", "checked")])
_PARAMS = np.dtype([(k, "<i8") for k in ("slot_off", "random_off", "n_random")])
_RANDOM = np.dtype([(k, "<i8") for k in ("n", "slot", "choice_off")])
_DOMAIN = np.dtype([("kind", "<i8"), ("n", "<i8"), ("ids", "<i8", 5), ("a", "<f8", 5),
                    ("b", "<f8", 5), ("total", "<f8")])

NONE, INT, BIN, PYTHON, RANDOM = range(5)
(S_PCT, S_CAP, S_MIN, S_MAX, S_CH_PCT, S_CH_CAP, S_CH_MIN, S_CH_MAX, S_PICK, S_SKIP, S_UNIQUE,
 S_BLOCK, S_RH, S_RW, N_SLOTS) = range(15)
D_PYTHON, D_RANDOM, D_SINGLE, D_PAIR, D_GENERAL = range(5)

# How patterns.py reads a key: a percentage bin (None: absent), int(v) (None: absent),
# int(p.get(key, default)), int(p.get(key) or 1).
AS_BIN, AS_INT, AS_DEFAULT, AS_OR_1 = range(4)

_CHANNELS = [("affected_channels_pct", S_CH_PCT, AS_BIN, None),
             ("max_corrupted_channels", S_CH_CAP, AS_INT, None),
             ("min_channel_skip", S_CH_MIN, AS_INT, None),
             ("max_channel_skip", S_CH_MAX, AS_INT, None)]


def _line(pct: str) -> list:
    return [(pct, S_PCT, AS_BIN, None), ("max_cardinality", S_CAP, AS_INT, None),
            ("min_value_skip", S_MIN, AS_INT, None), ("max_value_skip", S_MAX, AS_INT, None)]


def _skip(default: int) -> list:
    return [("skip_amount", S_SKIP, AS_DEFAULT, default),
            ("unique_channel_indexes", S_UNIQUE, AS_DEFAULT, 1), *_CHANNELS,
            ("indexes_corruption_pct", S_PICK, AS_BIN, None)]


_SHATTERED = [("avg_span_corruption_pct", S_PICK, AS_BIN, None),
              ("min_span_width", S_MIN, AS_INT, None), ("max_span_width", S_MAX, AS_INT, None),
              *_CHANNELS]

# spatial class -> (generator id in draw_sites.c, the keys its generator reads)
CLASSES: dict[str, tuple[int, list]] = {
    "single": (0, []),
    "same_row": (1, _line("row_corruption_pct")),
    "same_column": (2, _line("column_corruption_pct")),
    "bullet_wake": (3, _CHANNELS),
    "skip_2": (4, _skip(2)),
    "skip_4": (5, _skip(4)),
    "skip_8": (6, _skip(8)),
    "skip_16": (7, _skip(16)),
    "single_block": (8, [("block_size", S_BLOCK, AS_OR_1, None),
                         ("block_corruption_pct", S_PICK, AS_BIN, None)]),
    "multi_channel_block": (9, [("block_size", S_BLOCK, AS_OR_1, None), *_CHANNELS,
                                ("avg_block_corruption_pct", S_PICK, AS_BIN, None)]),
    "shattered_channel": (10, _SHATTERED),
    "quasi_shattered_channel": (11, _SHATTERED),
    "full_channels": (12, [*_CHANNELS, ("avg_channel_corruption_pct", S_PICK, AS_BIN, None)]),
    "rectangles": (13, [("rectangle_height", S_RH, AS_DEFAULT, 1),
                        ("rectangle_width", S_RW, AS_DEFAULT, 1), *_CHANNELS]),
    "single_channel_random": (14, [("channel_corruption_pct", S_PCT, AS_BIN, None),
                                   ("max_cardinality", S_CAP, AS_INT, None),
                                   ("min_value_skip", S_MIN, AS_INT, None),
                                   ("max_value_skip", S_MAX, AS_INT, None)]),
    "single_channel_alternated_blocks": (15, [("block_size", S_BLOCK, AS_DEFAULT, 1),
                                              ("min_block_skip", S_MIN, AS_INT, None),
                                              ("max_block_skip", S_MAX, AS_INT, None)]),
    "multiple_channels_uncategorized": (16, [("min_errors_per_channel", S_MIN, AS_INT, None),
                                             ("max_errors_per_channel", S_MAX, AS_INT, None),
                                             ("avg_channel_corruption_pct", S_PCT, AS_BIN, None),
                                             *_CHANNELS]),
}
#: The classifier's names in draw_sites.c (its K_* order): classify() answers one of them.
CHECKED = {name: k for k, name in enumerate(
    ("single", "skip_4", "single_block", "single_channel_alternated_blocks", "same_row",
     "full_channels", "rectangles", "single_channel_random", "multi_channel_block",
     "bullet_wake", "shattered_channel", "quasi_shattered_channel",
     "multiple_channels_uncategorized"))}
assert set(CHECKED) == patterns.CHECKED
#: Classes draw_sites.c leaves to Python: none. Every generator of patterns.GENERATORS and the
#: redraw-until-classified loop of patterns.draw_positions are in C; what C leaves to Python is
#: per site, not per class (an argsort tie, a parameter outside plain numbers, an
#: `out_of_range: bit_pattern` value, see `draw`).
PYTHON_ONLY: frozenset[str] = frozenset()
_BIG = 2**60  # larger ints stay in Python (C works in int64)
_NUMBER = (int, float)


def _slot(value: Any, present: bool, how: int, default: Any) -> tuple:
    """A parameter converted exactly as patterns.py converts it; PYTHON when it would raise
    or needs more than C's plain numbers."""
    if how == AS_BIN:
        if not present or value is None:
            return (NONE, 0, 0.0, 0.0)
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(type(v) in _NUMBER for v in value)):
            return (PYTHON, 0, 0.0, 0.0)
        try:
            low = float(value[0])
            span = float(value[1]) - low
        except OverflowError:
            return (PYTHON, 0, 0.0, 0.0)
        # a negative span: rng.uniform would raise, low + span * r would not
        ok = math.isfinite(span) and span >= 0
        return (BIN, 0, low, span) if ok else (PYTHON, 0, 0.0, 0.0)
    if how == AS_INT and (not present or value is None):
        return (NONE, 0, 0.0, 0.0)
    if how == AS_DEFAULT and not present:
        value = default
    if how == AS_OR_1:
        value = (value if present else None) or 1
    try:
        i = int(value)
    except (TypeError, ValueError, OverflowError):
        return (PYTHON, 0, 0.0, 0.0)
    return (INT, i, 0.0, 0.0) if -_BIG <= i <= _BIG else (PYTHON, 0, 0.0, 0.0)


def _domain(d: Any) -> tuple:
    """A sites._Domain as a domain_t row."""
    ids, a, b = [0] * 5, [0.0] * 5, [0.0] * 5
    if d.random:
        cum, total = np.asarray(d.cum, dtype=float), float(d.total)
        if len(cum) != 5 or not (np.isfinite(cum).all() and math.isfinite(total)
                                 and (np.diff(cum) >= 0).all()):
            return (D_PYTHON, 0, ids, a, b, 0.0)
        return (D_RANDOM, 5, ids, cum.tolist(), b, total)
    bins = list(d.bins)
    for j, i in enumerate(d.ids.tolist()[:5]):
        ids[j] = int(i)
    if d.kind == "single":
        return (D_SINGLE, 1, ids, a, b, 0.0)
    if d.kind == "pair":
        a[:2] = [float(v[0]) for v in bins]
        b[:2] = [float(v[1]) for v in bins]
        return (D_PAIR, 2, ids, a, b, 0.0)
    plain = all(isinstance(v, (list, tuple)) and len(v) == 2
                and all(isinstance(x, _NUMBER) and np.isfinite(x) for x in v)
                and 0 <= v[0] <= v[1] for v in bins)
    if not plain or not 3 <= len(bins) <= 5:
        return (D_PYTHON, 0, ids, a, b, 0.0)
    for j, v in enumerate(bins):  # as rng.uniform(*v) takes them
        a[j] = float(v[0])
        b[j] = float(v[1]) - a[j]
    return (D_GENERAL, len(bins), ids, a, b, 0.0)


class _PlanStruct(ctypes.Structure):
    _fields_ = [("n_classes", ctypes.c_int64), ("affine", ctypes.c_int64),
                ("class_choice", ctypes.c_int64), ("max_attempts", ctypes.c_int64)] + [
        (k, ctypes.c_void_p) for k in ("cum", "choices", "classes", "params", "slots",
                                       "randoms", "choice_slots", "domains")]


class _OutStruct(ctypes.Structure):
    _fields_ = [("positions", ctypes.c_void_p), ("values", ctypes.c_void_p),
                ("capacity", ctypes.c_int64), ("used", ctypes.c_int64),
                ("oor_at", ctypes.c_void_p), ("oor_exponent", ctypes.c_void_p),
                ("oor_up", ctypes.c_void_p), ("n_oor", ctypes.c_int64),
                ("need", ctypes.c_int64), ("lengths", ctypes.c_void_p),
                ("splits", ctypes.c_void_p), ("patterns", ctypes.c_void_p)]


class FlatPlan:
    """A sites._Plan as C arrays (built once per plan; the arrays live as long as this)."""

    def __init__(self, plan: Any) -> None:
        cum: list[float] = []
        choices: list[tuple] = []

        def choice(ch: Any) -> int:
            choices.append((len(cum), ch.n, int(bool(ch.sorted)), float(ch.total)))
            cum.extend(float(v) for v in ch.cum)
            return len(choices) - 1

        classes, params, slots, randoms, choice_slots, domains = [], [], [], [], [], []
        class_choice = choice(plan.choice)
        for name, (_, _, param_choice, param_sets, domain_choice, doms) in zip(
                plan.names, plan.classes, strict=True):
            gen, keys = CLASSES.get(name, (-1, []))
            if name in PYTHON_ONLY:
                gen, keys = -1, []  # C abandons the site; Python draws it
            where = {key: (role, how, default) for key, role, how, default in keys}
            classes.append((gen, choice(param_choice), len(params), choice(domain_choice),
                            len(domains), CHECKED.get(name, -1)))
            for merged, random in param_sets:
                row = [(NONE, 0, 0.0, 0.0)] * N_SLOTS
                for key, (role, how, default) in where.items():
                    row[role] = _slot(merged.get(key), key in merged, how, default)
                params.append((len(slots), len(randoms), len(random)))
                for key, options in random:
                    n = len(options) if isinstance(options, (list, tuple)) else 0
                    if key in where:
                        role, how, default = where[key]
                        row[role] = (RANDOM, len(randoms), 0.0, 0.0)
                        randoms.append((n, role, len(choice_slots)))
                        choice_slots += [_slot(v, True, how, default) for v in options[:n]]
                    else:
                        randoms.append((n, -1, 0))
                slots += row
            domains += [_domain(d) for d in doms]
        self.arrays = {
            "cum": np.array(cum + [0.0], dtype="<f8"),
            "choices": np.array(choices, dtype=_CHOICE),
            "classes": np.array(classes + [(0,) * 6], dtype=_CLASS),
            "params": np.array(params + [(0,) * 3], dtype=_PARAMS),
            "slots": np.array(slots + [(0, 0, 0.0, 0.0)], dtype=_SLOT),
            "randoms": np.array(randoms + [(0, 0, 0)], dtype=_RANDOM),
            "choice_slots": np.array(choice_slots + [(0, 0, 0.0, 0.0)], dtype=_SLOT),
            "domains": np.array(domains + [(0, 0, [0] * 5, [0.0] * 5, [0.0] * 5, 0.0)],
                                dtype=_DOMAIN),
        }
        self.struct = _PlanStruct(len(plan.names), int(bool(patterns.AFFINE_UNIFORM)),
                                  class_choice, int(patterns.MAX_ATTEMPTS),
                                  *(a.ctypes.data for a in self.arrays.values()))
        self.address = ctypes.addressof(self.struct)
        self.names = list(plan.names)


_FLAT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def flat_plan(plan: Any) -> FlatPlan:
    """The FlatPlan of a sites._Plan, cached with the plan's lifetime."""
    flat = _FLAT.get(plan)
    if flat is None:
        flat = _FLAT[plan] = FlatPlan(plan)
    return flat


def _words(n: int) -> list[int]:
    """An int as SeedSequence splits it: 32-bit words, least significant first ([0] for 0)."""
    out = [n & 0xFFFFFFFF]
    n >>= 32
    while n:
        out.append(n & 0xFFFFFFFF)
        n >>= 32
    return out


class _Workspace(threading.local):
    """One thread's output buffers, reused from call to call (results are copied out)."""

    cap = count = 0
    _ARRAYS = (("positions", np.int32), ("values", np.float32), ("oor_at", np.int64),
               ("oor_exponent", np.float64), ("oor_up", np.uint8))

    def start(self, cap: int, count: int) -> None:
        if cap > self.cap or count > self.count:
            self._allocate(max(cap, self.cap), max(count, self.count), keep=0)
        out = self.struct
        out.used = out.n_oor = out.need = 0

    def grow(self, cap: int) -> None:
        """More room in the middle of a call, keeping what was drawn."""
        self._allocate(cap, self.count, keep=self.struct.used)

    def _allocate(self, cap: int, count: int, keep: int) -> None:
        for name, dtype in self._ARRAYS:
            new = np.empty(cap, dtype=dtype)
            if keep:
                new[:keep] = getattr(self, name)[:keep]
            setattr(self, name, new)
        if count > self.count:
            self.lengths = np.zeros(count, dtype=np.int32)
            self.splits = np.zeros(count + 1, dtype=np.int32)  # splits[0] stays 0
            self.patterns = np.zeros(count, dtype=np.int32)
        used, n_oor = (self.struct.used, self.struct.n_oor) if keep else (0, 0)
        self.struct = _OutStruct(self.positions.ctypes.data, self.values.ctypes.data, cap, used,
                                 self.oor_at.ctypes.data, self.oor_exponent.ctypes.data,
                                 self.oor_up.ctypes.data, n_oor, 0, self.lengths.ctypes.data,
                                 self.splits.ctypes.data, self.patterns.ctypes.data)
        self.address = ctypes.addressof(self.struct)
        self.values_at, self.oor_at_at = self.struct.values, self.struct.oor_at
        self.oor_up_at = self.struct.oor_up
        self.cap, self.count = cap, count


_WORKSPACE = _Workspace()
_PREFIXES: dict[tuple[int, str], tuple[int, Any, int]] = {}


def _prefix(seed: int, target: str) -> tuple[int, Any, int]:
    """(crc32(target), the entropy words of (seed, crc) as a C array, their number)."""
    hit = _PREFIXES.get((seed, target))
    if hit is None:
        crc = zlib.crc32(target.encode())
        words = _words(seed) + _words(crc)
        if len(_PREFIXES) >= 256:
            _PREFIXES.clear()
        hit = _PREFIXES[(seed, target)] = (crc, (ctypes.c_uint32 * len(words))(*words),
                                           len(words))
    return hit


def draw(plan: Any, hwc: tuple[int, int, int], low: float, high: float, seed: int,
         target: str, first: int, count: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """Sites first .. first+count-1 as generate_sites builds them (positions, values, splits,
    patterns), or None when the library is not loaded or the case is not covered (then the
    caller draws them in Python)."""
    lib = load()
    if lib is None:
        return None
    h, w, c = hwc
    seed, first = int(seed), int(first)
    if (min(h, w, c) < 1 or h * w * c >= 2**31 or seed < 0 or first < 0
            or first + count > 2**64):
        return None
    crc, words, n_words = _prefix(seed, target)
    if n_words > 14:
        return None
    flat = flat_plan(plan)
    ws = _WORKSPACE
    ws.start(64 * count + 1024, count)
    done = 0
    while True:
        done = lib.classes_draw_sites(flat.address, h, w, c, low, high, words, n_words, first,
                                      done, count, ws.address)
        if done < 0:
            return None
        if done == count:
            break
        ws.grow(max(2 * ws.cap, ws.struct.used + ws.struct.need))
    used, n_oor = ws.struct.used, ws.struct.n_oor
    if n_oor:  # out-of-range values: NumPy's 10.0 ** u, then width * it above high or below low
        power = 10.0 ** ws.oor_exponent[:n_oor]
        lib.classes_finish_out_of_range(ws.values_at, ws.oor_at_at, power.ctypes.data,
                                        ws.oor_up_at, n_oor, low, high,
                                        max(high - low, abs(high), abs(low), 1e-3))
    kinds = ws.patterns[:count].tolist()
    names = flat.names
    if min(kinds) >= 0:
        return (ws.positions[:used].copy(), ws.values[:used].copy(),
                ws.splits[:count + 1].copy(), [names[k] for k in kinds])
    return _with_python_sites(plan, hwc, low, high, seed, crc, first, ws, kinds, names)


def _with_python_sites(plan, hwc, low, high, seed, crc, first, ws, kinds, names):
    """Splice in the sites C left to Python, each drawn by the reference code from its own
    generator (an error it raises is the one generate_sites raises)."""
    lengths = ws.lengths[:len(kinds)].astype(np.int64)
    ends = np.cumsum(lengths).tolist()
    pos_parts, val_parts, pattern_names = [], [], []
    start = 0
    for j, kind in enumerate(kinds):
        if kind >= 0:
            pos_parts.append(ws.positions[start:ends[j]])
            val_parts.append(ws.values[start:ends[j]])
            pattern_names.append(names[kind])
            start = ends[j]
            continue
        start = ends[j]  # a site C left to Python (it wrote no entries)
        name, pos, val = plan.draw(np.random.default_rng([seed, crc, first + j]), hwc, low, high)
        pos_parts.append(pos)
        val_parts.append(val)
        pattern_names.append(name)
        lengths[j] = len(pos)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return (np.concatenate(pos_parts).astype(np.int32),
            np.concatenate(val_parts).astype(np.float32), splits, pattern_names)
