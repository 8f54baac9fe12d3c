"""Read a model file into a ModelGraph without the code that built the model.

`.h5` (Keras 2 legacy or Keras 3): the config is the `model_config` attribute and the weights
are read with h5py from `model_weights/<layer>/` in the order of its `weight_names` attribute
(trainable then non-trainable, the legacy order).
`.keras`: the config is `config.json` in the zip; the weights are stored by object path, not by
layer name, so we let Keras load the original once and copy each layer's arrays by name.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from classes_tool.errors import UserError
from classes_tool.graph.dialects import parse_model_config
from classes_tool.graph.model_graph import ModelGraph, with_registered_names
from classes_tool.limits import check_keras_h5, check_keras_zip
from classes_tool.registration import register_layers

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_kind(path: Path) -> str:
    """'h5', 'keras' or 'onnx', judged by content (and suffix for ONNX)."""
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a model file (SavedModel folders are not "
                        "supported: save the model as .h5 or .keras)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == HDF5_SIGNATURE:
        return "h5"
    if head[:2] == b"PK":
        return "keras"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    raise UserError(f"{path} is neither an HDF5 (.h5) nor a Keras (.keras) model file")


def read_model(path: str | Path, custom_objects: dict[str, Any] | None = None) -> ModelGraph:
    """Read `path` (.h5 or .keras) into a ModelGraph carrying the weights.

    `custom_objects` (as for `keras.models.load_model`) are needed only for a .keras file with
    custom layers that are not registered in this process: its weights are read through Keras.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "h5":
        return _read_h5(path)
    if kind == "keras":
        return _read_keras(path, custom_objects)
    raise UserError(f"{path} is an ONNX file: convert it first (classes-tool convert)")


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_h5(path: Path) -> ModelGraph:
    check_keras_h5(path)  # the sizes and shapes it declares, before anything is read
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"cannot open {path} as HDF5: {exc}") from None
    with handle as f:
        if "model_config" not in f.attrs:
            raise UserError(f"{path} holds no model config (a weights-only file?); save the whole "
                            "model with model.save()")
        try:
            config = json.loads(_decode(f.attrs["model_config"]))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: the model config is not valid JSON: {exc}") from None
        graph = parse_model_config(config)
        group = f["model_weights"] if "model_weights" in f else f
        keys = [graph.weight_key(n) for n in graph.nodes] + list(graph.weight_groups)
        graph.weights = {key: _layer_arrays(group, key) for key in keys
                         if key is not None and key in group}
        graph.dialect = "keras2" if _decode(f.attrs.get("keras_version", "3")).startswith("2") \
            else graph.dialect
    graph.source_format = "h5"
    return graph


def _layer_arrays(group: h5py.Group, name: str) -> list[np.ndarray]:
    layer = group[name]
    names = [_decode(n) for n in layer.attrs.get("weight_names", [])]
    return [np.asarray(layer[n]) for n in names]


def _read_keras(path: Path, custom_objects: dict[str, Any] | None = None) -> ModelGraph:
    check_keras_zip(path)  # the sizes it declares, before Keras allocates anything
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a valid .keras file: {exc}") from None
    graph = parse_model_config(config)
    import keras  # deferred: only .keras files need Keras to read weights

    register_layers()  # a .keras file this tool wrote may hold its layers
    try:
        custom = with_registered_names(custom_objects, [
            (n.registered_name, n.class_name) for n in graph.nodes])
        model = keras.saving.load_model(path, compile=False, custom_objects=custom)
    except Exception as exc:  # noqa: BLE001 - any load failure is a problem with the file
        raise UserError(f"cannot load the weights of {path}: {exc}") from None
    graph.weights = weights_by_layer(model)
    graph.source_format = "keras"
    return graph


def weights_by_layer(model: Any) -> dict[str, list[np.ndarray]]:
    """A live model's arrays by layer name, trainable then non-trainable (the legacy order)."""
    return {layer.name: [np.asarray(v) for v in layer.trainable_weights +
                         layer.non_trainable_weights]
            for layer in model.layers}


def graph_from_model(model: Any) -> ModelGraph:
    """The ModelGraph of a live Keras model (its config plus its current weights)."""
    graph = parse_model_config(json.loads(model.to_json()))  # exactly what a file would hold
    graph.weights = weights_by_layer(model)
    return graph
