"""Fault campaigns on the systolic target: one fault in the array per run.

Per-layer mode (default): for every target layer (a Conv2D or Dense of the model) the layer alone
is moved onto a `SystolicArray`, so a fault hits that layer only. Shared mode (``shared: true``):
all target layers run together on ONE array, as on a real accelerator, so a permanent fault hits
every one of them; the campaign then has a single target named by `shared_target_name`.

The fault population of a target is every (fault model, line, PE, bit, polarity) of the array,
and a Leveugle-sized sample of it is drawn without replacement (a permutation seeded from
(seed, target number), so fault ``i`` never depends on batch size or order). Each fault runs on
all campaign inputs; outcomes go to the shared result store (target = layer name or shared-array
name, pattern = 'stuck_at' / 'bit_flip', params = {line, x, y, bit, polarity}) and the shared
report, grouped per line and per bit, plus a heat map of the critical-SDC rate per PE.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.config_checks import check_seed, positive_int
from classes_tool.config_reader import read_yaml
from classes_tool.data import finite_inputs, labels, read_npz
from classes_tool.errors import UserError
from classes_tool.systolic.array import SystolicArray
from classes_tool.systolic.dataflow import LINES
from classes_tool.systolic.faults import BitFlip, StuckAt

PATTERNS = ("stuck_at", "bit_flip")

KEYS = {
    "target": "must be 'systolic'",
    "model": "Keras model file (.h5 or .keras)",
    "data": ".npz with 'x' and optional 'y' (the campaign inputs)",
    "inputs": "how many inputs of the data to use (default: all)",
    "calibration": ".npz whose 'x' calibrates int8 scales (default: the campaign data)",
    "calibration_inputs": "how many calibration inputs to use (default 256)",
    "array": "{n1, n2, n3, dataflow, in_dtype, mac_dtype} of the systolic array",
    "layers": "layer names to target (default: every Conv2D/Dense)",
    "shared": "true: all target layers run on ONE array, a fault hits them all (default false)",
    "lines": "register lines to fault (default [a, b, c])",
    "fault_models": "subset of [stuck_at, bit_flip] (default both)",
    "bits": "bit positions to fault (default: every bit of each line's register)",
    "faults": "fixed number of faults per target (instead of margin)",
    "margin": "statistical margin e of the Leveugle sample size (default 0.05)",
    "confidence": "confidence of the sizing and the intervals (default 0.99)",
    "p": "estimated failure probability for the sizing (default 0.5)",
    "seed": "seed of the fault draws (default 0)",
    "batch_size": "inputs per forward pass (default 512)",
    "tolerance": "{atol, rtol} under which outputs count as equal (default 1e-6, 1e-5)",
    "output": "output folder (default runs/<config name>)",
    "sizing": "'fixed' (Leveugle, default) or 'adaptive' (stages until the margin is reached)",
    "pilot_faults": "adaptive sizing: faults of the first stage per target",
    "max_faults": "adaptive sizing: most faults per target (default: the fault space)",
    "input_set": "'fixed' (default: the rates are about these inputs) or 'sample' (a random "
                 "sample of a larger data set; intervals include the inputs' variance)",
}


def load_systolic_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a systolic campaign YAML; paths become absolute (relative to the file)."""
    return systolic_config(read_yaml(path), path)


def systolic_config(raw: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Validate a systolic config read from the file `path`; paths become absolute (relative to
    the file), and the output folder defaults to runs/<config name>."""
    path = Path(path)
    config = validate_config(raw, base_dir=path.parent)
    config.setdefault("output", os.path.normpath(Path("runs") / path.stem))
    return config


#: Largest array simulated: the array enumerates every iteration of a tile (n1 n2 n3) to find
#: its PEs, so `n1: 1000000000` would run for minutes before failing.
MAX_ARRAY_ITERATIONS = 1 << 24


def _check_array_size(array: dict[str, Any]) -> None:
    extents = [array.get(k) for k in ("n1", "n2", "n3")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in extents):
        return  # SystolicArray names the bad extent
    if np.prod([max(n, 1) for n in extents], dtype=object) > MAX_ARRAY_ITERATIONS:
        raise UserError(f"array n1 x n2 x n3 = {' x '.join(map(str, extents))} is too large to "
                        f"simulate (at most {MAX_ARRAY_ITERATIONS:,} iterations per tile)")


def validate_config(raw: dict[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
    """Check every key of a systolic campaign config; return a normalised copy."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    if raw.get("target", "systolic") != "systolic":
        raise UserError(f"target must be 'systolic' here, got {raw.get('target')!r}")
    base = Path(base_dir)
    cfg: dict[str, Any] = {"target": "systolic"}
    for key in ("model", "data"):
        if key not in raw:
            raise UserError(f"config needs '{key}'")
    for key in ("model", "data", "calibration", "output"):
        if raw.get(key) is not None:
            p = Path(str(raw[key]))
            cfg[key] = os.path.normpath(p if p.is_absolute() else base / p)
    array = raw.get("array") or {}
    if not isinstance(array, dict):
        raise UserError("'array' must be a mapping {n1, n2, n3, dataflow, in_dtype, mac_dtype}")
    bad = sorted(set(array) - {"n1", "n2", "n3", "dataflow", "in_dtype", "mac_dtype"})
    if bad:
        raise UserError(f"unknown array key(s) {', '.join(bad)}")
    cfg["array"] = {"n1": 8, "n2": 8, "n3": 8, "dataflow": "weight_stationary",
                    "in_dtype": "int8", **array}
    _check_array_size(cfg["array"])
    SystolicArray(**cfg["array"])  # raises UserError if the array is unusable
    lines = raw.get("lines") or list(LINES)
    if not isinstance(lines, list) or not lines or any(x not in LINES for x in lines):
        raise UserError(f"'lines' must be a non-empty subset of {list(LINES)}, got {lines!r}")
    cfg["lines"] = list(dict.fromkeys(lines))
    models = raw.get("fault_models") or list(PATTERNS)
    if not isinstance(models, list) or not models or any(x not in PATTERNS for x in models):
        raise UserError(f"'fault_models' must be a non-empty subset of {list(PATTERNS)}")
    cfg["fault_models"] = list(dict.fromkeys(models))
    if raw.get("layers") is not None:
        if not isinstance(raw["layers"], list) or not all(isinstance(x, str) for x in raw["layers"]):
            raise UserError("'layers' must be a list of layer names")
        cfg["layers"] = list(raw["layers"])
    shared = raw.get("shared", False)
    if not isinstance(shared, bool):
        raise UserError(f"'shared' must be true or false, got {shared!r}")
    cfg["shared"] = shared
    if raw.get("bits") is not None:
        bits = raw["bits"]
        if not isinstance(bits, list) or not bits or not all(isinstance(b, int) and b >= 0
                                                               for b in bits):
            raise UserError("'bits' must be a list of non-negative integers")
        cfg["bits"] = sorted(set(bits))
    for key, default in (("margin", 0.05), ("confidence", 0.99), ("p", 0.5)):
        cfg[key] = _number(f"'{key}'", raw.get(key, default))
    if not 0 < cfg["margin"] < 1 or not 0 < cfg["confidence"] < 1 or not 0 < cfg["p"] < 1:
        raise UserError("'margin', 'confidence' and 'p' must lie strictly between 0 and 1")
    cfg["seed"] = check_seed("'seed'", raw.get("seed", 0))
    for key, default in (("batch_size", 512), ("calibration_inputs", 256)):
        cfg[key] = positive_int(f"'{key}'", raw.get(key, default))
    for key in ("inputs", "faults"):
        if raw.get(key) is not None:
            cfg[key] = positive_int(f"'{key}'", raw[key])
    sizing = raw.get("sizing", "fixed")
    if sizing not in ("fixed", "adaptive"):
        raise UserError(f"'sizing' must be fixed or adaptive, got {sizing!r}")
    input_set = raw.get("input_set", "fixed")
    if input_set not in ("fixed", "sample"):
        raise UserError(f"'input_set' must be fixed or sample, got {input_set!r}")
    cfg["sizing"], cfg["input_set"] = sizing, input_set
    for key in ("pilot_faults", "max_faults"):
        if raw.get(key) is not None:
            if sizing != "adaptive":
                raise UserError(f"'{key}' applies to 'sizing: adaptive' only")
            cfg[key] = positive_int(f"'{key}'", raw[key])
    if sizing == "adaptive" and raw.get("faults") is not None:
        raise UserError("'faults' is a fixed budget; 'sizing: adaptive' sizes each target from "
                        "its results (give 'max_faults' to cap it)")
    if sizing == "adaptive" and input_set == "sample":
        raise UserError("'sizing: adaptive' needs 'input_set: fixed': with sampled inputs the "
                        "inputs' share of the interval does not shrink with more faults")
    tol = raw.get("tolerance") or {}
    if not isinstance(tol, dict) or set(tol) - {"atol", "rtol"}:
        raise UserError("'tolerance' must be a mapping with atol and/or rtol")
    cfg["tolerance"] = {k: _number(f"tolerance.{k}", tol.get(k, d))
                        for k, d in (("atol", 1e-6), ("rtol", 1e-5))}
    if cfg["tolerance"]["atol"] < 0 or cfg["tolerance"]["rtol"] < 0:
        raise UserError(f"'tolerance' values must not be negative, got {tol!r}")
    return cfg


def _number(what: str, value: Any) -> float:
    """A float; strings such as '1e-6' count (YAML reads that spelling as a string)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return number


def shared_target_name(layers: list[str]) -> str:
    """Target name of a shared-array campaign: the layers if few, else their count (table width)."""
    joined = "+".join(layers)
    if len(layers) <= 4 and len(joined) <= 40:
        return f"array({joined})"
    return f"array({len(layers)} layers)"


class FaultSpace:
    """Mixed-radix numbering of every (pattern, line, PE, bit, polarity) of one array."""

    def __init__(self, array: SystolicArray, lines, patterns, bits=None):
        self.array = array
        self.pes = array.pes
        self.groups = []  # (pattern, line, bits, polarities)
        for pattern in patterns:
            for line in lines:
                width = array.line_dtype(line).itemsize * 8
                line_bits = [b for b in (bits if bits is not None else range(width)) if b < width]
                if not line_bits:
                    continue
                pols = (0, 1) if pattern == "stuck_at" else (None,)
                self.groups.append((pattern, line, line_bits, pols))
        if not self.groups:
            raise UserError("no fault fits: every requested bit is beyond the registers' widths")
        self.sizes = [len(self.pes) * len(b) * len(p) for _, _, b, p in self.groups]
        self.size = int(sum(self.sizes))

    def fault(self, index: int) -> tuple[str, dict[str, Any]]:
        """(pattern, params) of fault number `index` of the population."""
        for (pattern, line, bits, pols), size in zip(self.groups, self.sizes, strict=True):
            if index < size:
                pe, rest = divmod(index, len(bits) * len(pols))
                b, pol = divmod(rest, len(pols))
                x, y = self.pes[pe].tolist()
                return pattern, {"line": line, "x": x, "y": y, "bit": bits[b],
                                 "polarity": pols[pol]}
            index -= size
        raise IndexError(index)


def make_fault(pattern: str, params: dict[str, Any]):
    """The fault object for a stored (pattern, params) pair."""
    if pattern == "stuck_at":
        return StuckAt(params["line"], params["x"], params["y"], params["bit"], params["polarity"])
    return BitFlip(params["line"], params["x"], params["y"], params["bit"])


def _load_npz(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file not found: {p}")
    data = read_npz(p, what)  # numbers only: string labels are refused before any store
    if "x" not in data:
        raise UserError(f"{p} has no array 'x'")
    x, y = data["x"].astype(np.float32), data.get("y")
    finite_inputs([x], f"{what} file {p}")
    if y is not None and len(y) != len(x):
        raise UserError(f"{what} file {p}: {len(x)} inputs in x but {len(y)} labels in y")
    if y is not None:  # one integer class per sample (one-hot rows: their argmax)
        y = labels({"y": y}, len(x), f"{what} file {p}")
    return x, y


def _check_shape(model, x: np.ndarray, path: str, model_path: Path) -> None:
    """Data that does not fit the model would fail inside Keras after the store was created.

    As in Keras, an extra or missing trailing axis of size 1 still fits.
    """
    want = tuple(model.inputs[0].shape[1:])
    got = tuple(x.shape[1:])

    def fits(shape: tuple) -> bool:
        return len(shape) == len(want) and all(w is None or w == g
                                               for w, g in zip(want, shape, strict=True))

    if fits(got) or (want and want[-1] == 1 and fits(got + (1,))) or \
            (got and got[-1] == 1 and fits(got[:-1])):
        return
    text = str(tuple("any" if d is None else d for d in want)).replace("'", "")
    raise UserError(f"{path}: inputs are shaped {got} but model {model_path} expects {text}")


class SystolicSetup:
    """What a systolic campaign builds from its config before any fault runs, the same on the
    driver and on every remote worker: the model, inputs, array, fault space, and per target
    its layers and the order in which its faults are drawn."""

    def __init__(self, cfg: dict[str, Any]):
        from classes_tool.results.adaptive import sizing_for
        from classes_tool.results.stats import leveugle_sample_size
        from classes_tool.session import load_keras_model  # heavy: when a campaign runs
        from classes_tool.systolic.layers import compatible_layers

        self.cfg = cfg
        model_path = self.model_path = Path(cfg["model"])
        model = load_keras_model(model_path)  # sizes checked before Keras allocates anything
        if len(model.inputs) != 1:
            raise UserError(f"model {model_path} has {len(model.inputs)} inputs; systolic "
                            "campaigns need a model with one input")
        self.model = model
        x, y = _load_npz(cfg["data"], "data")
        _check_shape(model, x, cfg["data"], model_path)
        if cfg.get("inputs"):
            x, y = x[:cfg["inputs"]], (None if y is None else y[:cfg["inputs"]])
        if len(x) == 0:
            raise UserError(f"data file {cfg['data']} holds no inputs")
        self.x, self.y = x, y
        array = self.array = SystolicArray(**cfg["array"])
        compatible = compatible_layers(model)
        layers = cfg.get("layers") or compatible
        if not layers:
            raise UserError("the model has no Conv2D/Dense layer that can run on the array")
        for name in layers:
            if name not in compatible:
                raise UserError(f"layer {name!r} is not a Conv2D/Dense of the model; "
                                f"compatible: {', '.join(compatible)}")
        if cfg["shared"]:
            layers = list(dict.fromkeys(layers))
            targets = [(shared_target_name(layers), layers)]
        else:
            targets = [(name, [name]) for name in layers]
        self.layers = layers
        self.calibration = None
        if array.in_dtype.kind in "iu":
            calib = x if cfg.get("calibration") is None else _load_npz(cfg["calibration"],
                                                                       "calibration")[0]
            _check_shape(model, calib, cfg.get("calibration") or cfg["data"], model_path)
            self.calibration = calib[:cfg["calibration_inputs"]]
        self.space = FaultSpace(array, cfg["lines"], cfg["fault_models"], cfg.get("bits"))
        #: (target, its layers, fault indices in the population), and each target's offset
        self.plan: list[tuple[str, list[str], np.ndarray]] = []
        self.offsets: dict[str, int] = {}
        self.population: dict[str, int] = {}
        adaptive = cfg.get("sizing") == "adaptive"
        self.sizing = (sizing_for(self.space.size, cfg["margin"], cfg["confidence"],
                                  cfg.get("pilot_faults"), cfg.get("max_faults"))
                       if adaptive else None)
        offset = 0
        for t, (name, names) in enumerate(targets):
            if self.sizing is not None:
                n = self.sizing.cap  # the space is ordered up to the cap; stages take a prefix
            else:
                n = cfg["faults"] if cfg.get("faults") else leveugle_sample_size(
                    self.space.size, cfg["margin"], cfg["confidence"], cfg["p"])
            n = min(n, self.space.size)
            order = np.random.default_rng([cfg["seed"], t]).permutation(self.space.size)[:n]
            self.plan.append((name, names, order))
            self.population[name], self.offsets[name] = self.space.size, offset
            offset += n

    def meta(self) -> dict[str, Any]:
        cfg, array = self.cfg, self.array
        meta = {"target": "systolic", "model": str(self.model_path), "data": cfg["data"],
                "inputs": int(len(self.x)), "seed": cfg["seed"], "array": array.config(),
                "lines": cfg["lines"], "fault_models": cfg["fault_models"],
                "bits": cfg.get("bits"), "population": self.population, "margin": cfg["margin"],
                "confidence": cfg["confidence"], "p": cfg["p"], "tolerance": cfg["tolerance"],
                "layers": self.layers}
        if cfg["shared"]:
            meta["shared"] = True  # only then: stores made before this key existed still resume
        if cfg.get("input_set", "fixed") != "fixed":
            meta["input_set"] = cfg["input_set"]
        if self.sizing is not None:
            meta.update({"sizing": "adaptive",
                         "pilot_faults_per_target": {n: self.sizing.pilot for n, _, _ in self.plan},
                         "max_faults_per_target": {n: self.sizing.cap for n, _, _ in self.plan}})
        return json.loads(json.dumps(meta))

    def files(self) -> dict[str, Path]:
        """The files the campaign reads, by config key (what a remote worker is sent)."""
        keys = ("model", "data", "calibration")
        return {k: Path(self.cfg[k]) for k in keys if self.cfg.get(k) is not None}


class SystolicWorker:
    """Evaluates the faults of a setup (a work unit is one fault of one target, on every
    input): the target's layers moved onto the array once, its golden outputs computed once."""

    def __init__(self, setup: SystolicSetup):
        self.setup = setup
        self._target: tuple[int, Any, np.ndarray] | None = None

    @classmethod
    def from_files(cls, cfg: dict[str, Any], paths: dict[str, Path]) -> SystolicWorker:
        """A worker of the campaign `cfg` whose files were copied to `paths` (a Ray actor's)."""
        return cls(SystolicSetup({**cfg, **{k: str(v) for k, v in paths.items()}}))

    def _model(self, t: int):
        from classes_tool.systolic.layers import calibrate, predict, replace_layers

        if self._target is None or self._target[0] != t:
            setup = self.setup
            self._target = None  # the previous target's copy goes before the next is built
            sys_model = replace_layers(setup.model, setup.plan[t][1], setup.array)
            if setup.calibration is not None:
                calibrate(sys_model, setup.calibration)
            setup.array.clear_faults()
            golden = predict(sys_model, setup.x, setup.cfg["batch_size"])
            self._target = (t, sys_model, golden)
        return self._target[1], self._target[2]

    def compute(self, t: int, i: int) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        """(pattern, params, outcome columns over the inputs) of fault `i` of target `t`."""
        from classes_tool.results.outcomes import classify
        from classes_tool.systolic.layers import predict

        setup = self.setup
        sys_model, golden = self._model(t)
        pattern, params = setup.space.fault(int(setup.plan[t][2][i]))
        setup.array.clear_faults()
        setup.array.add_fault(make_fault(pattern, params))
        try:
            faulty = predict(sys_model, setup.x, setup.cfg["batch_size"])
        finally:
            setup.array.clear_faults()
        return pattern, params, classify(golden, faulty, **setup.cfg["tolerance"])


def run_systolic_campaign(config: dict[str, Any], out_dir: str | Path | None = None,
                          seed: int | None = None, quiet: bool = False, resume: bool = True,
                          workers: int | None = None, address: str | None = None,
                          threads_per_worker: int | None = None) -> dict[str, Any]:
    """Run (or resume) a systolic campaign; return {'db', 'report' (files), 'heatmap', ...}.

    `config` is a dict as `load_systolic_config` returns (or `validate_config` accepts; relative
    paths are then taken from the current folder). `out_dir` and `seed` override the config.
    Results go to ``<out_dir>/results.db``; the report to ``<out_dir>/report``. `resume=False`
    refuses a folder that already holds results. `workers`/`address`: the faults run on Ray
    actors (see `classes_tool.distributed`), with the same rows.
    """
    import functools

    from classes_tool.results.estimates import design_from_meta, stored_schedule
    from classes_tool.results.report import plot_heatmap, write_report
    from classes_tool.results.store import RESULTS_FILE, ResultStore, rows_from_classification

    cfg = validate_config({k: v for k, v in config.items()}, base_dir=".")
    if seed is not None:
        cfg["seed"] = check_seed("seed", seed)
    out = Path(out_dir if out_dir is not None else cfg.get("output", "runs/systolic"))
    db = out / RESULTS_FILE
    if not resume and db.is_file() and db.stat().st_size:
        raise UserError(f"{db} already exists: continue it with --resume, or choose another "
                        "output folder (--out)")
    if (out / "results.sqlite").exists() and not db.exists():
        raise UserError(f"{out / 'results.sqlite'} is the store of an older version of this "
                        f"tool: rename it to {RESULTS_FILE} to continue it")
    setup = SystolicSetup(cfg)
    x, y = setup.x, setup.y
    meta = setup.meta()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total_faults = sum(len(order) for _, _, order in setup.plan)
    progress = {"faults": 0}
    with contextlib.ExitStack() as stack:
        executor = None
        if workers is not None or address is not None:
            from classes_tool.distributed.ray_executor import RayExecutor

            executor = stack.enter_context(RayExecutor(
                setup.files(), functools.partial(SystolicWorker.from_files, cfg), workers, address,
                threads_per_worker))
        local = SystolicWorker(setup)
        store = stack.enter_context(ResultStore(db, meta=meta, discard_empty=True))
        done = store.done_pairs()
        for t, (name, _, order) in enumerate(setup.plan):
            offset = setup.offsets[name]

            def commit(i: int, result, name=name, offset=offset) -> None:
                pattern, params, cls = result
                fault_index = offset + i
                rows = rows_from_classification([fault_index] * len(x), range(len(x)), cls,
                                                None if y is None else y.tolist())
                store.add([{"fault_index": fault_index, "target": name, "pattern": pattern,
                            "params": params}], rows)
                progress["faults"] += 1
                n = progress["faults"]
                if not quiet and (n % 25 == 0 or n == total_faults):
                    print(f"[systolic] {n}/{total_faults} faults "
                          f"({time.perf_counter() - started:.1f} s)", flush=True)

            def run_faults(first: int, last: int, t=t, offset=offset, commit=commit) -> None:
                """Faults first..last-1 of this target (those not stored yet)."""
                todo = [i for i in range(first, last)
                        if not all((offset + i, k) in done for k in range(len(x)))]
                progress["faults"] += (last - first) - len(todo)
                if executor is not None:
                    executor.run_units(t, todo, commit,
                                       lambda i, t=t: f"{setup.plan[t][0]} fault {i}")
                else:
                    for i in todo:
                        commit(i, local.compute(t, i))

            if setup.sizing is None:
                run_faults(0, len(order))
                continue
            design = design_from_meta(store.meta)
            first = 0
            while True:  # stages until the margin (see results.adaptive)
                stages, finished = stored_schedule(store.connection, name, offset,
                                                   offset + len(order), design, setup.sizing,
                                                   len(x))
                if finished:
                    break
                run_faults(first, stages[-1])
                first = stages[-1]
    report_dir = out / "report"
    files = write_report(db, report_dir, group_params=["line", "bit"],
                         confidence=cfg["confidence"])
    heatmap = plot_heatmap(db, "x", "y", report_dir / "pe_heatmap_critical_sdc.png",
                           outcome="critical_sdc")
    if not quiet:
        print(f"[systolic] results: {db}\n[systolic] report: {report_dir}")
    with ResultStore(db, must_exist=True) as reader:  # adaptive sizing: what the stages ran
        ran = len(reader.faults())
    return {"db": db, "report": files, "heatmap": heatmap, "faults": ran,
            "inputs": int(len(x)), "population": setup.population}


def run_systolic_config(path: str | Path, out_dir: str | Path | None = None,
                        seed: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Load a YAML config (paths relative to it) and run the campaign: what the CLI calls."""
    return run_systolic_campaign(load_systolic_config(path), out_dir=out_dir, seed=seed, quiet=quiet)
