"""Fault-aware training: (fine-)tune a model while `FaultInjection` layers corrupt activations.

The network learns weights whose predictions survive the faults it will meet on the hardware.
Injection is active in training steps only (the config's `apply_during`, normally ``train``), the
gradient passes straight through the injection, and the fault mask changes every
`epoch_interval` epochs via `FaultAwareTrainingCallback`. The result is saved as a *plain* model
(the original architecture with the tuned weights), ready for the usual campaign.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from classes_tool.config_reader import read_yaml
from classes_tool.errors import UserError
from classes_tool.files import publish, staging_folder
from classes_tool.quant.calibration import (
    QuantSpec,
    attach_grid,
    attached_grid,
    save_model_with_grid,
)
from classes_tool.quant.config import (
    FaultInjectionConfig,
    parse_fault_injection,
    parse_train_run,
)
from classes_tool.quant.layers import (
    InsertAfter,
    apply_fault_injection,
    injection_layers,
    recalibrate,
    set_injection,
)
from classes_tool.quant.statistics import collect_statistics, write_statistics
from classes_tool.quant.sweep import (
    accuracy_under_faults,
    fit_data_to_model,
    load_model,
    load_npz,
)
from classes_tool.results.injection_statistics import format_table


class FaultAwareTrainingCallback(keras.callbacks.Callback):
    """Tell the `FaultInjection` layers which epoch it is, and refresh calibrated grids.

    Add it to your own ``model.fit(..., callbacks=[FaultAwareTrainingCallback(x_calib)])`` when
    training a model returned by `apply_fault_injection`. With `calibration_data`, the grid step
    of calibrated layers follows the changing activation ranges (once per epoch).
    """

    def __init__(self, calibration_data: np.ndarray | None = None, epoch_offset: int = 0):
        super().__init__()
        self.calibration_data = calibration_data
        self.epoch_offset = int(epoch_offset)

    def on_epoch_begin(self, epoch, logs=None):
        set_injection(self.model, epoch=epoch + self.epoch_offset)
        if self.calibration_data is not None and epoch > 0:
            recalibrate(self.model, self.calibration_data)


def copy_weights(source: keras.Model, destination: keras.Model) -> None:
    """Copy weights layer by layer, matched by name (layers only in `source` are skipped)."""
    names = {layer.name for layer in source.layers}
    for layer in destination.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def trained_grid(patched: keras.Model) -> dict[str, QuantSpec]:
    """The integer grid each injection layer of `patched` uses now, by target layer name (layers
    whose grid a fake-quant layer of the model declares are left out: the model carries those)."""
    return {fi.target: QuantSpec(fi.current_scale(), fi.bits, fi.signed, "trained")
            for fi in injection_layers(patched)
            if fi.strategy.domain == "int" and fi.grid_source != "fake_quant"}


def _outputs_are_probabilities(model: keras.Model, x: np.ndarray) -> bool:
    p = np.asarray(model.predict(x[:32], verbose=0))
    return bool(np.all(p >= 0) and np.allclose(p.sum(-1), 1.0, atol=1e-3))


def fault_aware_fit(model: keras.Model, x: np.ndarray, y: np.ndarray,
                    config: dict | FaultInjectionConfig, calibration_data: np.ndarray | None = None,
                    epochs: int = 5, batch_size: int = 32, learning_rate: float = 1e-3,
                    validation_fraction: float = 0.0, shuffle_seed: int = 0, verbose: int = 0,
                    insert_after: InsertAfter | None = None,
                    recalibrate_each_epoch: bool | None = None
                    ) -> tuple[keras.Model, keras.Model, dict]:
    """Fine-tune `model` with injection; return (patched model, plain tuned model, history).

    `model` is left untouched. Labels are class indices (sparse) or one-hot rows.
    `recalibrate_each_epoch` (default: unless `quantize_all`) lets calibrated grids follow the
    activation ranges; with `quantize_all` the grid is the deployed quantization and stays fixed.
    """
    cfg = parse_fault_injection(config)
    if recalibrate_each_epoch is None:
        recalibrate_each_epoch = not cfg.quantize_all
    if cfg.apply_during == "eval":
        raise UserError("fault-aware training needs fault_injection.apply_during: train or both")
    cfg = cfg.replace(enabled=True)
    calib = x if calibration_data is None else calibration_data
    patched = apply_fault_injection(model, cfg, calib, insert_after=insert_after)
    from_logits = not _outputs_are_probabilities(model, x)
    loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits) if y.ndim == 1
            else keras.losses.CategoricalCrossentropy(from_logits=from_logits))
    patched.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                    metrics=["accuracy"])
    keras.utils.set_random_seed(shuffle_seed)
    history = patched.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True,
                          validation_split=validation_fraction, verbose=verbose,
                          callbacks=[FaultAwareTrainingCallback(
                              calib[:cfg.calibration_samples] if recalibrate_each_epoch else None)])
    plain = keras.models.clone_model(model)
    copy_weights(patched, plain)
    # the grid it was trained on goes with the tuned model (and into its file, see
    # `save_model_with_grid`): calibrating the tuned model afresh gives a coarser grid on which
    # the robustness is lost
    attach_grid(plain, {**attached_grid(model), **trained_grid(patched)})
    return patched, plain, {k: [float(v) for v in vs] for k, vs in history.history.items()}


def evaluate_fault_aware(original: keras.Model, patched: keras.Model, calibration_data: np.ndarray,
                         x: np.ndarray, y: np.ndarray, config: dict | FaultInjectionConfig,
                         seeds: list[int] | None = None) -> dict:
    """Accuracy without and with faults of the original and of the fault-aware tuned model.

    The original is patched and calibrated afresh; the tuned model is evaluated through its own
    injection layers (with `quantize_all`, on the grid it was trained on, which is the deployed
    one; otherwise after a final recalibration). Seeds default to 5 seeds unused in training.
    `patched`'s injection settings are restored afterwards.
    """
    cfg = parse_fault_injection(config).replace(enabled=True)
    seeds = seeds or [cfg.seed + 1000 + i for i in range(5)]
    result = {"probability": cfg.probability, "injection_type": cfg.injection_type,
              "seeds": seeds}
    probe = apply_fault_injection(original, cfg.replace(apply_during="eval"), calibration_data)
    if not cfg.quantize_all:
        recalibrate(patched, calibration_data[:cfg.calibration_samples])
    for role, m in (("original", probe), ("fault_aware", patched)):
        clean = accuracy_under_faults(m, x, y, 0.0, [cfg.seed])[0]
        accs = accuracy_under_faults(m, x, y, cfg.probability, seeds)
        result[role] = {"clean_accuracy": clean, "faulty_accuracy_mean": float(np.mean(accs)),
                        "faulty_accuracy_std": float(np.std(accs)), "faulty_accuracy": accs}
    set_injection(patched, probability=cfg.probability, seed=cfg.seed,
                  apply_during=cfg.apply_during, step=0)
    return result


def train_from_config(config: dict | str | Path, out_dir: str | Path, quiet: bool = False,
                      base_dir: str | Path | None = None) -> dict[str, Path]:
    """`classes-tool train CONFIG.yaml`: fault-aware fine-tuning as the config describes.

    Writes into `out_dir`: the tuned plain model (`training.output`, original architecture, for
    campaigns), the tuned model with its injection layers (``<output>_injected.keras``: carries the
    grid it was trained on; sweep it with `sweep_from_config(..., model_path=...)`),
    ``history.json``, ``fault_statistics.json`` (injection statistics of the training run) and,
    when `data.test` is given, ``evaluation.json`` (accuracy without and with faults at the
    configured probability, before and after tuning, over 5 seeds). Returns the paths by role.
    """
    source = None
    if isinstance(config, str | Path):
        base_dir = base_dir or Path(config).parent
        source = config
        config = read_yaml(config)
    run = parse_train_run(config, base_dir, source)
    if run.train_data is None:
        raise UserError("train needs data.train (an .npz file with arrays x and y)")
    if run.fault_injection.apply_during == "eval":
        raise UserError("fault-aware training needs fault_injection.apply_during: train or both")
    # Everything the run reads is loaded and checked before the (long) training, and the files
    # reach `out_dir` only once all of them are written: a failure leaves no half-filled folder.
    model = load_model(run.model)
    x, y = load_npz(run.train_data)
    x = fit_data_to_model(model, x, y, run.train_data, run.model)
    if run.test_data is not None:
        xt, yt = load_npz(run.test_data)
        xt = fit_data_to_model(model, xt, yt, run.test_data, run.model)
    tc, fi = run.training, run.fault_injection
    patched, plain, history = fault_aware_fit(
        model, x, y, fi, calibration_data=x, epochs=tc.epochs, batch_size=tc.batch_size,
        learning_rate=tc.learning_rate, validation_fraction=tc.validation_fraction,
        shuffle_seed=tc.shuffle_seed, verbose=0 if quiet else 2)
    out = Path(out_dir)
    stem = Path(tc.output)
    names = {"model": tc.output, "injected_model": f"{stem.stem}_injected{stem.suffix}",
             "history": "history.json", "statistics": "fault_statistics.json"}
    with staging_folder(out) as stage:
        staged = {role: stage / name for role, name in names.items()}
        save_model_with_grid(plain, staged["model"])  # with the grid it was trained on
        patched.save(staged["injected_model"])  # before the evaluation runs it further
        staged["history"].write_text(json.dumps(history, indent=2) + "\n")
        stats = collect_statistics(patched)
        write_statistics(stats, staged["statistics"])
        if not quiet:
            print(format_table(stats))
        if run.test_data is not None:
            evaluation = evaluate_fault_aware(model, patched, x, xt, yt, fi)
            staged["evaluation"] = stage / "evaluation.json"
            staged["evaluation"].write_text(json.dumps(evaluation, indent=2) + "\n")
        paths = publish(staged, out)
    if not quiet and run.test_data is not None:
        for role in ("original", "fault_aware"):
            e = evaluation[role]
            print(f"{role}: accuracy without faults {e['clean_accuracy']:.4f}, under "
                  f"{fi.probability:g}% {fi.injection_type} faults "
                  f"{e['faulty_accuracy_mean']:.4f} ± {e['faulty_accuracy_std']:.4f}")
    # the written files are the caller's to list: the CLI prints each one once
    return paths
