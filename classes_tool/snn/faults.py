"""Fault models for spiking networks: neurons, neuron parameters, membranes, spikes, synapses.

A `FaultModel` says *what* goes wrong (name plus parameters); a `Fault` says *where* (a layer,
one or more sites) and *when* (a window of time steps, all steps by default). Parameters left
open (positions, factors, bits, steps) are drawn when the fault is injected into a campaign, from
one generator per fault seeded with (seed, fault_index), and written back so a saved campaign
replays exactly.

Sites are index tuples: into a LIF layer's neuron shape (its output without batch and time) for
neuron faults, into a synapse layer's kernel shape for synapse faults.

Documented defaults for drawn parameters:
  threshold / leak / gain factor: uniform in [0.5, 1.5]; refractory factor: uniform in [1, 4]
  (a neuron without a refractory period counts as period 1); perturbed synapse factor: uniform in
  [0.5, 1.5] (and -1 allowed by giving it); stuck neuron probability: uniform in [0, 1];
  membrane bit: uniform over the format's bits; flip step: uniform over the time steps.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np

from classes_tool.errors import UserError

NEURON_MODELS = ("dead_neuron", "saturated_neuron", "stuck_neuron", "random_neuron",
                 "threshold", "leak", "refractory", "gain",
                 "membrane_bitflip", "membrane_stuck", "spike_flip")
SYNAPSE_MODELS = ("dead_synapse", "stuck_synapse", "perturbed_synapse", "saturated_synapse",
                  "synapse_bitflip")
PARAMETRIC = ("threshold", "leak", "refractory", "gain")
ALL_MODELS = NEURON_MODELS + SYNAPSE_MODELS
FACTOR_RANGE = {"threshold": (0.5, 1.5), "leak": (0.5, 1.5), "gain": (0.5, 1.5),
                "refractory": (1.0, 4.0), "perturbed_synapse": (0.5, 1.5)}
#: The parameters each fault model reads, and what they must be: checked when the model is made,
#: so a misspelt or mistyped parameter fails before the campaign instead of in the middle of it.
_NUMBER, _INT, _BIT_FORMAT, _FENCE = "a number", "an integer", "'float32' or 'int8'", (
    "'mild' or 'extreme'")
_NEURON_AS = "'dead_neuron', 'saturated_neuron' or 'stuck_neuron'"
PARAMS: dict[str, dict[str, str]] = {
    "dead_neuron": {}, "saturated_neuron": {},
    "stuck_neuron": {"value": _NUMBER, "prob": _NUMBER, "draw_seed": _INT},
    "random_neuron": {"as": _NEURON_AS, "value": _NUMBER, "prob": _NUMBER, "draw_seed": _INT},
    "threshold": {"factor": _NUMBER}, "leak": {"factor": _NUMBER},
    "refractory": {"factor": _NUMBER}, "gain": {"factor": _NUMBER},
    "membrane_bitflip": {"format": _BIT_FORMAT, "bit": _INT, "step": _INT, "zero_point": _INT,
                         "scale": _NUMBER},
    "membrane_stuck": {"value": _NUMBER}, "spike_flip": {"step": _INT},
    "dead_synapse": {}, "saturated_synapse": {"fence": _FENCE, "polarity": _INT},
    "stuck_synapse": {"value": _NUMBER},
    "perturbed_synapse": {"factor": _NUMBER},
    "synapse_bitflip": {"format": _BIT_FORMAT, "bit": _INT, "zero_point": _INT, "scale": _NUMBER},
}
#: Parameters without a drawn default: the model cannot run without them.
REQUIRED = {"membrane_stuck": ("value",), "stuck_synapse": ("value",)}


def _check_params(name: str, params: dict) -> None:
    allowed = PARAMS[name]
    for key, value in params.items():
        if key not in allowed:
            raise UserError(f"SNN fault model {name!r} has no parameter {key!r}"
                            + (f" (it takes {', '.join(allowed)})" if allowed else
                               " (it takes none)"))
        kind = allowed[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and np.isfinite(value) if kind == _NUMBER else
              isinstance(value, (int, np.integer)) and not isinstance(value, bool)
              if kind == _INT else
              value in ("float32", "int8") if kind == _BIT_FORMAT else
              value in ("mild", "extreme") if kind == _FENCE else
              value in ("dead_neuron", "saturated_neuron", "stuck_neuron"))
        if not ok:
            raise UserError(f"SNN fault model {name!r}: parameter {key!r} must be {kind}, "
                            f"got {value!r}")
    missing = [k for k in REQUIRED.get(name, ()) if k not in params]
    if missing:
        raise UserError(f"SNN fault model {name!r} needs {', '.join(map(repr, missing))}")
    _check_ranges(name, params)


def _check_ranges(name: str, params: dict) -> None:
    """Values no fault of the model could use, refused when it is made (the bounds that depend
    on the network, a step within its time steps, are checked when a fault is drawn)."""
    def refuse(key: str, must: str) -> None:
        raise UserError(f"SNN fault model {name!r}: parameter {key!r} must {must}, got "
                        f"{params[key]!r}")

    if "prob" in params and not 0.0 <= params["prob"] <= 1.0:
        refuse("prob", "lie in [0, 1]")
    if "prob" in params and "value" in params:
        raise UserError(f"SNN fault model {name!r}: give 'prob' (a neuron spiking at random) "
                        "or 'value' (stuck at 0 or 1), not both")
    if "value" in params and name in ("stuck_neuron", "random_neuron") and \
            params["value"] not in (0, 1):
        refuse("value", "be 0 or 1 (no spike or a spike)")
    if "polarity" in params and params["polarity"] not in (-1, 1):
        refuse("polarity", "be 1 or -1")
    if "scale" in params and not params["scale"] > 0:
        refuse("scale", "be positive")
    if "zero_point" in params and not -128 <= params["zero_point"] <= 127:
        refuse("zero_point", "lie in [-128, 127]")
    if "factor" in params and name in PARAMETRIC and not params["factor"] > 0:
        refuse("factor", f"be positive (it multiplies the neuron's {name})")
    if "step" in params and params["step"] < 0:
        refuse("step", "be at least 0")
    if "bit" in params:
        fmt = params.get("format", "float32" if name == "membrane_bitflip" else "int8")
        bits = 32 if fmt == "float32" else 8
        if not 0 <= params["bit"] < bits:
            refuse("bit", f"lie in 0..{bits - 1} for {fmt}")


TUKEY_K = {"mild": 2.25, "extreme": 4.5}  # inside (1.5, 3] IQR = mild band; beyond 3 = extreme


@dataclasses.dataclass(frozen=True)
class FaultModel:
    """What goes wrong: a model name from ALL_MODELS and its parameters (JSON-able)."""

    name: str
    params: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.name not in ALL_MODELS:
            raise UserError(f"unknown SNN fault model {self.name!r}; known: {', '.join(ALL_MODELS)}")
        _check_params(self.name, self.params)

    @property
    def kind(self) -> str:
        return "synapse" if self.name in SYNAPSE_MODELS else "neuron"

    def to_dict(self) -> dict:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> FaultModel:
        if isinstance(data, str):
            return cls(data, {})
        given = data.get("params")
        if given is not None and not isinstance(given, dict):
            raise UserError(f"SNN fault model {data.get('name')!r}: 'params' must be a mapping "
                            f"of parameter names to values, got {given!r}")
        params = dict(given or {})
        params.update({k: v for k, v in data.items() if k not in ("name", "params")})
        return cls(str(data["name"]), params)


# Constructors named as users of SpikeFI know them.
def DeadNeuron() -> FaultModel:  # noqa: N802
    """The neuron never spikes."""
    return FaultModel("dead_neuron")


def SaturatedNeuron() -> FaultModel:  # noqa: N802
    """The neuron spikes at every step."""
    return FaultModel("saturated_neuron")


def StuckNeuron(prob: float | None = None, value: int | None = None) -> FaultModel:  # noqa: N802
    """The neuron's output is stuck: at `value` (0/1) or spiking with probability `prob`."""
    params: dict[str, Any] = {}
    if value is not None:
        params["value"] = int(value)
    if prob is not None:
        params["prob"] = float(prob)
    return FaultModel("stuck_neuron", params)


def RandomNeuron() -> FaultModel:  # noqa: N802
    """One of dead, saturated or stuck, drawn per fault."""
    return FaultModel("random_neuron")


def ParametricNeuron(param: str, factor: float | None = None) -> FaultModel:  # noqa: N802
    """A neuron parameter ('threshold', 'leak' = beta, 'refractory', 'gain') scaled by `factor`."""
    if param not in PARAMETRIC:
        raise UserError(f"parametric fault param must be one of {PARAMETRIC}, got {param!r}")
    return FaultModel(param, {} if factor is None else {"factor": float(factor)})


def MembraneBitFlip(bit: int | None = None, step: int | None = None, fmt: str = "float32",  # noqa: N802
                    scale: float | None = None, zero_point: int = 0) -> FaultModel:
    """Flip one bit of the membrane at one step: IEEE-754 float32 or an int8 quantised value."""
    params: dict[str, Any] = {"format": fmt, "zero_point": int(zero_point)}
    if bit is not None:
        params["bit"] = int(bit)
    if step is not None:
        params["step"] = int(step)
    if scale is not None:
        params["scale"] = float(scale)
    return FaultModel("membrane_bitflip", params)


def MembraneStuck(value: float = 0.0) -> FaultModel:  # noqa: N802
    """The membrane reads `value` at every step of the window."""
    return FaultModel("membrane_stuck", {"value": float(value)})


def SpikeFlip(step: int | None = None) -> FaultModel:  # noqa: N802
    """The neuron's output spike is inverted at one step."""
    return FaultModel("spike_flip", {} if step is None else {"step": int(step)})


def DeadSynapse() -> FaultModel:  # noqa: N802
    """The weight is 0."""
    return FaultModel("dead_synapse")


def StuckSynapse(value: float) -> FaultModel:  # noqa: N802
    """The weight is stuck at `value`."""
    return FaultModel("stuck_synapse", {"value": float(value)})


def PerturbedSynapse(factor: float | None = None) -> FaultModel:  # noqa: N802
    """The weight is multiplied by `factor`."""
    return FaultModel("perturbed_synapse", {} if factor is None else {"factor": float(factor)})


def SaturatedSynapse(fence: str = "mild", polarity: int = 1) -> FaultModel:  # noqa: N802
    """The weight jumps outside the layer's Tukey fence (mild: Q3 + 2.25 IQR, extreme: Q3 + 4.5
    IQR; polarity -1 uses Q1 - k IQR)."""
    if fence not in TUKEY_K:
        raise UserError(f"fence must be 'mild' or 'extreme', got {fence!r}")
    return FaultModel("saturated_synapse", {"fence": fence, "polarity": int(polarity)})


def SynapseBitFlip(bit: int | None = None, fmt: str = "int8", scale: float | None = None,  # noqa: N802
                   zero_point: int = 0) -> FaultModel:
    """Flip one bit of the weight: of its int8 quantised value (scale, zero point; default scale
    max|w| / 127 of the layer) or of its float32 representation."""
    params: dict[str, Any] = {"format": fmt, "zero_point": int(zero_point)}
    if bit is not None:
        params["bit"] = int(bit)
    if scale is not None:
        params["scale"] = float(scale)
    return FaultModel("synapse_bitflip", params)


@dataclasses.dataclass
class Fault:
    """Where a fault model acts: `layer`, explicit `sites` (None = `count` random unique ones),
    and a time `window` [start, stop) (None = all steps)."""

    model: FaultModel
    layer: str
    sites: list[tuple[int, ...]] | None = None
    count: int = 1
    window: tuple[int, int] | None = None

    def __post_init__(self):
        if isinstance(self.model, str):
            self.model = FaultModel(self.model)
        if self.sites is not None:
            sites = [tuple(int(v) for v in np.atleast_1d(s)) for s in self.sites]
            if len(set(sites)) != len(sites):
                raise UserError(f"fault sites must be unique within a fault: {sites}")
            self.sites = sites
        if self.window is not None:
            self.window = (int(self.window[0]), int(self.window[1]))

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "layer": self.layer,
                "sites": None if self.sites is None else [list(s) for s in self.sites],
                "count": self.count, "window": None if self.window is None else list(self.window)}

    @classmethod
    def from_dict(cls, data: dict) -> Fault:
        try:
            model = FaultModel.from_dict(data["model"])
            return cls(model, str(data["layer"]),
                       None if data.get("sites") is None else [tuple(s) for s in data["sites"]],
                       int(data.get("count", 1)),
                       None if data.get("window") is None else tuple(data["window"]))
        except KeyError as exc:
            raise UserError(f"SNN fault entry lacks {exc.args[0]!r}: {data}") from None


# ----------------------------------------------------------------------------------------------
# Resolution: turn open choices into concrete values (done once, at injection).

def resolve(fault: Fault, site_shape: tuple[int, ...], time_steps: int, rng: np.random.Generator,
            kernel: np.ndarray | None = None) -> Fault:
    """Return a copy of `fault` with sites and every drawn parameter made concrete."""
    size = int(np.prod(site_shape))
    if fault.sites is None:
        if not 1 <= fault.count <= size:
            raise UserError(f"fault count {fault.count} does not fit layer {fault.layer!r} "
                            f"with {size} sites")
        flat = rng.choice(size, size=fault.count, replace=False)
        sites = [tuple(int(v) for v in np.unravel_index(i, site_shape)) for i in flat]
    else:
        sites = []
        for s in fault.sites:
            if len(s) == 1 and len(site_shape) > 1:
                if not 0 <= s[0] < size:
                    raise UserError(f"site {s} outside layer {fault.layer!r} ({size} sites)")
                s = tuple(int(v) for v in np.unravel_index(s[0], site_shape))
            if len(s) != len(site_shape) or any(not 0 <= v < d for v, d in zip(s, site_shape, strict=True)):
                raise UserError(f"site {s} outside layer {fault.layer!r} of shape {site_shape}")
            sites.append(s)
    window = fault.window
    if window is not None and window[0] >= window[1]:
        raise UserError(f"window {window} must start before it stops")
    if window is not None and not 0 <= window[0] < window[1] <= time_steps:
        raise UserError(f"window {window} outside 0..{time_steps}")
    params = dict(fault.model.params)
    name = fault.model.name
    if name == "random_neuron" and "as" not in params:
        params["as"] = str(rng.choice(["dead_neuron", "saturated_neuron", "stuck_neuron"]))
    effective = params.get("as", name)
    if effective == "stuck_neuron":
        if "value" not in params and "prob" not in params:
            params["prob"] = float(rng.uniform(0.0, 1.0))
        if "prob" in params:
            params["draw_seed"] = int(rng.integers(0, 2**31 - 1))
    if name in FACTOR_RANGE and "factor" not in params:
        lo, hi = FACTOR_RANGE[name]
        params["factor"] = float(rng.uniform(lo, hi))
    # the given parameters were checked when the model was made (`_check_params`); what is
    # drawn here lies in range, and the network's own bound (the step) is checked below
    if name in ("membrane_bitflip", "synapse_bitflip"):
        fmt = params.setdefault("format", "float32" if name == "membrane_bitflip" else "int8")
        bits = 32 if fmt == "float32" else 8
        if "bit" not in params:
            params["bit"] = int(rng.integers(0, bits))
        if fmt == "int8":
            params["zero_point"] = int(params.get("zero_point", 0))
        if fmt == "int8" and "scale" not in params:
            if kernel is not None:
                params["scale"] = float(np.max(np.abs(kernel))) / 127.0 or 1.0
            else:
                params["scale"] = 1.0 / 64.0  # membrane in [-2, 2) with 8 bits
    if name in ("membrane_bitflip", "spike_flip"):
        if "step" not in params:
            params["step"] = int(rng.integers(0, time_steps))
        if not 0 <= params["step"] < time_steps:
            raise UserError(f"step {params['step']} outside 0..{time_steps - 1}")
    return Fault(FaultModel(name, params), fault.layer, sites, len(sites), window)


# ----------------------------------------------------------------------------------------------
# Value arithmetic shared by the engine and the tests.

def flip_float32(value: float, bit: int) -> float:
    """`value` as IEEE-754 float32 with one bit inverted."""
    (raw,) = struct.unpack("<I", struct.pack("<f", np.float32(value)))
    (out,) = struct.unpack("<f", struct.pack("<I", raw ^ (1 << bit)))
    return float(np.float32(out))


def quantize_int8(value, scale: float, zero_point: int):
    """Affine int8 quantisation: clip(round(v / scale) + zero_point, -128, 127)."""
    return np.clip(np.round(np.asarray(value, np.float64) / scale) + zero_point, -128, 127
                   ).astype(np.int64)


def flip_int8(q, bit: int):
    """Invert one bit of a two's-complement int8 value (kept as a signed integer)."""
    u = (np.asarray(q, np.int64) & 0xFF) ^ (1 << bit)
    return np.where(u >= 128, u - 256, u)


def synapse_value(model: FaultModel, weight: float, kernel: np.ndarray) -> float:
    """The faulty value of one weight under a synapse fault model."""
    p = model.params
    if model.name == "dead_synapse":
        return 0.0
    if model.name == "stuck_synapse":
        return float(p["value"])
    if model.name == "perturbed_synapse":
        return float(weight) * float(p["factor"])
    if model.name == "saturated_synapse":
        q1, q3 = np.percentile(kernel, [25, 75])
        k = TUKEY_K[p.get("fence", "mild")]
        iqr = q3 - q1
        return float(q3 + k * iqr) if int(p.get("polarity", 1)) >= 0 else float(q1 - k * iqr)
    if model.name == "synapse_bitflip":
        if p["format"] == "float32":
            return flip_float32(weight, int(p["bit"]))
        # Only the change the flip makes to the stored integer; no quantisation error mixed in.
        q = quantize_int8(weight, p["scale"], p["zero_point"])
        return float(weight) + float(flip_int8(q, int(p["bit"])) - q) * float(p["scale"])
    raise ValueError(f"not a synapse model: {model.name}")


def describe(fault: Fault) -> dict:
    """A JSON-able description of a resolved fault for result rows."""
    out = {"layer": fault.layer, "sites": [list(s) for s in (fault.sites or [])]}
    out.update(fault.model.params)
    if fault.window is not None:
        out["window"] = list(fault.window)
    return out
