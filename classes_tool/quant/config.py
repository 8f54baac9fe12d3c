"""The `fault_injection:` YAML block (and the `training:` block of `classes-tool train`), validated.

A typo in a fault-injection config silently changes what an experiment measures, so every
unknown key and every out-of-range value is a `UserError` that names the key and what is valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classes_tool.config_checks import reject_unknown_keys
from classes_tool.errors import UserError
from classes_tool.quant.calibration import check_bits
from classes_tool.quant.strategies import get_strategy, strategy_names

MODES = ("full_model", "layer")
RESAMPLE = ("epoch", "step", "sample")
PHASES = ("train", "eval", "both")
#: Layers injected after by default (when the model has no fake-quant layers and `layers` is unset).
DEFAULT_LAYER_CLASSES = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
                         "Dense")


@dataclass
class FaultInjectionConfig:
    """What, where, when and how often to corrupt activations (see docs/quant.md)."""

    enabled: bool = True
    probability: float = 1.0  # percent of activations hit
    mode: str = "full_model"
    injection_layer: int | str = -1  # mode=layer: index or name among injected layers; -1 random
    injection_type: str = "random"
    bit: int | None = None  # bit_flip / stuck_at / float flips; None = random bit per hit
    stuck_value: int | None = None  # stuck_at: 0 or 1
    bit_width: int = 8
    apply_during: str = "train"
    epoch_interval: int = 1
    step_interval: float = 1.0  # probability that a training step is injected at all
    seed: int = 0
    track_statistics: bool = True
    layers: list[str] | None = None  # layer names or class names; None = automatic
    calibration_samples: int = 512
    resample: str = "epoch"  # training masks: per epoch_interval, per step, or per sample
    quantize_all: bool = False  # integer strategies: every value on the grid (clipped), not only hits
    stored_grid: bool = True  # use the grid a fault-aware tuned model was saved with; false: calibrate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FaultInjectionConfig:
        """A validated copy with some fields changed."""
        return parse_fault_injection({**self.to_dict(), **changes})


def _bool(key: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise UserError(f"fault_injection.{key} must be true or false, got {v!r}")
    return v


def _int(key: str, v: object, lo: int | None = None, hi: int | None = None,
         section: str = "fault_injection") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{section}.{key} must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise UserError(f"{section}.{key} must be in {rng}, got {v}")
    return v


def _float(key: str, v: object, lo: float, hi: float, section: str = "fault_injection") -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise UserError(f"{section}.{key} must be a number, got {v!r}")
    if not lo <= float(v) <= hi:
        raise UserError(f"{section}.{key} must be between {lo:g} and {hi:g}, got {v}")
    return float(v)


def _choice(key: str, v: object, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise UserError(f"fault_injection.{key} must be one of {', '.join(choices)}, got {v!r}")
    return str(v)


def parse_fault_injection(block: dict | FaultInjectionConfig | None) -> FaultInjectionConfig:
    """Validate a `fault_injection:` mapping into a `FaultInjectionConfig`."""
    if isinstance(block, FaultInjectionConfig):
        return block.replace()
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise UserError(f"fault_injection must be a mapping, got {type(block).__name__}")
    known = {f.name for f in dataclasses.fields(FaultInjectionConfig)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise UserError(f"unknown key(s) in fault_injection: {', '.join(map(str, unknown))}; "
                        f"valid: {', '.join(sorted(known))}")
    cfg = FaultInjectionConfig(**block)
    cfg.enabled = _bool("enabled", cfg.enabled)
    cfg.probability = _float("probability", cfg.probability, 0.0, 100.0)
    cfg.mode = _choice("mode", cfg.mode, MODES)
    if not isinstance(cfg.injection_layer, str):
        cfg.injection_layer = _int("injection_layer", cfg.injection_layer, lo=-1)
    if cfg.injection_type not in strategy_names():
        raise UserError(f"fault_injection.injection_type {cfg.injection_type!r} is unknown; "
                        f"valid: {', '.join(strategy_names())}")
    cfg.bit_width = check_bits(cfg.bit_width)
    strategy = get_strategy(cfg.injection_type, bit=None, value=cfg.stuck_value)
    width = {"int": cfg.bit_width, "float32": 32, "float16": 16}[strategy.domain]
    if cfg.bit is not None:
        cfg.bit = _int("bit", cfg.bit, 0, width - 1)
    if cfg.stuck_value is not None:
        cfg.stuck_value = _int("stuck_value", cfg.stuck_value, 0, 1)
    cfg.apply_during = _choice("apply_during", cfg.apply_during, PHASES)
    cfg.epoch_interval = _int("epoch_interval", cfg.epoch_interval, lo=1)
    cfg.step_interval = _float("step_interval", cfg.step_interval, 0.0, 1.0)
    cfg.seed = _int("seed", cfg.seed, 0, 2**31 - 1)
    cfg.track_statistics = _bool("track_statistics", cfg.track_statistics)
    cfg.quantize_all = _bool("quantize_all", cfg.quantize_all)
    cfg.stored_grid = _bool("stored_grid", cfg.stored_grid)
    cfg.resample = _choice("resample", cfg.resample, RESAMPLE)
    cfg.calibration_samples = _int("calibration_samples", cfg.calibration_samples, lo=1)
    if cfg.layers is not None:
        if isinstance(cfg.layers, str):
            cfg.layers = [cfg.layers]
        if not isinstance(cfg.layers, list) or not cfg.layers or \
                not all(isinstance(x, str) for x in cfg.layers):
            raise UserError("fault_injection.layers must be a non-empty list of layer or class "
                            f"names, got {cfg.layers!r}")
    return cfg


# --------------------------------------------------------------------------- `train` configs

@dataclass
class TrainingConfig:
    """The `training:` block: how to (fine-)tune with injection active."""

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    output: str = "model_fat.keras"
    validation_fraction: float = 0.0
    shuffle_seed: int = 0


@dataclass
class TrainRun:
    """Everything `classes-tool train` / `sweep` need from one YAML file."""

    model: Path
    train_data: Path | None
    test_data: Path | None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    fault_injection: FaultInjectionConfig = field(default_factory=FaultInjectionConfig)


def _path(section: str, v: object, base: Path | None) -> Path:
    if not isinstance(v, str) or not v:
        raise UserError(f"{section} must be a file path, got {v!r}")
    p = Path(v)
    if not p.is_absolute() and base is not None and not p.exists() and (base / p).exists():
        p = base / p
    if not p.exists():
        raise UserError(f"{section}: file not found: {v}")
    return p


#: The top-level keys of a `train`/`sweep` config; any other key is a typo (e.g. `modle:`) that
#: would otherwise be ignored while the run silently uses a default.
TRAIN_RUN_KEYS = ("model", "data", "training", "fault_injection")


def parse_train_run(config: dict, base_dir: str | Path | None = None,
                    source: str | Path | None = None) -> TrainRun:
    """Validate the sections `train`/`sweep` use: `model`, `data`, `training`, `fault_injection`.

    Any other top-level key is an error. Relative paths are taken from the working directory,
    else from `base_dir` (the config file's folder). `source` (the config file) is named in the
    messages about top-level keys.
    """
    where = f" of {source}" if source is not None else ""
    if not isinstance(config, dict):
        raise UserError(f"the config{where} must be a YAML mapping")
    reject_unknown_keys(config, TRAIN_RUN_KEYS, f"the config{where}", "top-level key(s)")
    base = Path(base_dir) if base_dir is not None else None
    if "model" not in config:
        raise UserError(f"the config{where} needs `model:` (path of the .h5/.keras model)")
    model = _path("model", config["model"], base)
    data = config.get("data") or {}
    if not isinstance(data, dict):
        raise UserError("data must be a mapping with `train:` and/or `test:` .npz paths")
    unknown = sorted(set(data) - {"train", "test"})
    if unknown:
        raise UserError(f"unknown key(s) in data: {', '.join(unknown)}; valid: test, train")
    train = _path("data.train", data["train"], base) if data.get("train") else None
    test = _path("data.test", data["test"], base) if data.get("test") else None
    block = config.get("training") or {}
    if not isinstance(block, dict):
        raise UserError("training must be a mapping")
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise UserError(f"unknown key(s) in training: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(known))}")
    tc = TrainingConfig(**block)
    tc.epochs = _int("epochs", tc.epochs, lo=0, section="training")
    tc.batch_size = _int("batch_size", tc.batch_size, lo=1, section="training")
    tc.learning_rate = _float("learning_rate", tc.learning_rate, 1e-12, 10.0, section="training")
    tc.validation_fraction = _float("validation_fraction", tc.validation_fraction, 0.0, 0.9,
                                    section="training")
    tc.shuffle_seed = _int("shuffle_seed", tc.shuffle_seed, lo=0, section="training")
    if not isinstance(tc.output, str) or Path(tc.output).suffix not in (".keras", ".h5"):
        raise UserError(f"training.output must be a file name ending in .keras or .h5, "
                        f"got {tc.output!r}")
    if "fault_injection" not in config:
        raise UserError("config needs a `fault_injection:` block")
    fi = parse_fault_injection(config["fault_injection"])
    return TrainRun(model=model, train_data=train, test_data=test, training=tc, fault_injection=fi)
