"""Describe a model file, generate injection sites for chosen nodes, and write a patched copy.

This is the Python API behind `classes-tool describe | sites | patch`; each function is what one
command does, so the CLI stays a thin shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classes_tool.data import EXAMPLE_DATA, load_npz, model_inputs
from classes_tool.errors import UserError
from classes_tool.files import atomic_path, write_text_atomic
from classes_tool.graph import ModelGraph, build_model, file_kind, graph_from_model, read_model
from classes_tool.graph.model_graph import Node
from classes_tool.graph.transform import node_from_layer, output_shapes
from classes_tool.limits import check_keras_h5
from classes_tool.simulator.error_model import (
    available_error_models,
    error_model_for_layer,
    load_error_model,
)
from classes_tool.simulator.layer import MODE_OFF, MODE_RANDOM, ErrorSimulator
from classes_tool.simulator.sites import SiteSet, generate_sites, load_sites

CALIBRATION_SAMPLES = 512
SIMULATOR_SUFFIX = "_error_sim"


@dataclass
class LoadedModel:
    """A model read from a file: its graph, the rebuilt Keras model and each node's shape."""

    path: Path
    graph: ModelGraph
    model: keras.Model
    shapes: dict[str, tuple[int, ...]]


def load(path: str | Path, input_shapes: Sequence[tuple[int, ...]] | None = None) -> LoadedModel:
    """Read any supported model file (.h5, .keras, .onnx) and rebuild it."""
    path = Path(path)
    kind = file_kind(path)
    if input_shapes and kind != "onnx":  # a Keras file fixes its own shapes
        raise UserError(f"input shapes (--input-shape, or input_shape in a config) apply to "
                        f"ONNX models only; {path.name} is a {kind} file")
    if kind == "onnx":
        from classes_tool.convert import load_onnx_as_keras  # optional heavy import

        graph = graph_from_model(load_onnx_as_keras(path, input_shapes=input_shapes))
        graph.source_format = "onnx"
    else:
        if path.suffix == ".h5":  # sizes and shapes it declares, before Keras allocates
            check_keras_h5(path)
        graph = read_model(path)
    model = build_model(graph)
    return LoadedModel(path=path, graph=graph, model=model, shapes=output_shapes(model))


def describe(loaded: LoadedModel) -> dict[str, Any]:
    """The graph as JSON-able data: every node, its class, output shape, inputs, consumers and
    the error model the tool would use for it."""
    nodes = []
    for node in loaded.graph.nodes:
        layer = loaded.model.get_layer(node.name)
        nodes.append({
            "name": node.name,
            "class_name": node.class_name,
            "output_shape": [None, *loaded.shapes[node.name]],
            "inputs": sorted({r.layer for r in node.refs()}),
            "consumers": loaded.graph.consumers(node.name),
            "parameters": int(sum(np.prod(w.shape) for w in layer.weights)),
            "error_model": None if node.is_input else error_model_for_layer(node.class_name,
                                                                             node.config),
            # the file's own name of a renamed node, and the operation a layer stands for
            **({"saved_as": node.source_name} if node.source_name else {}),
            **({"origin": node.origin} if node.origin else {}),
        })
    return {"model": loaded.graph.name, "file": str(loaded.path),
            "format": loaded.graph.source_format, "dialect": loaded.graph.dialect,
            "inputs": loaded.graph.inputs, "outputs": [r.layer for r in loaded.graph.outputs],
            "nodes": nodes}


def select_targets(graph: ModelGraph, after: Sequence[str] = (),
                   after_types: Sequence[str] = ()) -> list[str]:
    """Node names chosen by name and/or by layer class, in graph order, without duplicates."""
    if not after and not after_types:
        raise UserError("choose where to inject: --after NODE and/or --after-type LAYER_CLASS")
    chosen = set()
    for name in after:
        node = graph.node(name)
        if node.is_input:
            raise UserError(f"'{name}' is a model input; choose a layer")
        chosen.add(node.name)  # the file's name of a renamed node ('conv1/conv') works too
    classes = {n.class_name for n in graph.nodes}
    for class_name in after_types:
        if class_name not in classes:
            raise UserError(f"no layer of type '{class_name}' in the model; types present: "
                            f"{', '.join(sorted(classes))}")
        chosen.update(graph.nodes_of_type(class_name))
    return [n for n in graph.names() if n in chosen]


def data_inputs(loaded: LoadedModel, data: dict[str, np.ndarray], source: str
                ) -> list[np.ndarray]:
    """`model_inputs` for a loaded model file: one converted from ONNX reads image data in the
    ONNX layout too."""
    return model_inputs(loaded.model, data, source,
                        onnx_layout=loaded.graph.source_format == "onnx")


def calibration_arrays(loaded: LoadedModel, calibration: str | Path | None) -> list[np.ndarray]:
    """Calibration inputs: the given .npz, else the shipped example data if it fits."""
    if calibration is not None:
        return [a[:CALIBRATION_SAMPLES] for a in
                data_inputs(loaded, load_npz(calibration), str(calibration))]
    if EXAMPLE_DATA.is_file():
        try:
            return [a[:CALIBRATION_SAMPLES] for a in
                    data_inputs(loaded, load_npz(EXAMPLE_DATA), "example data")]
        except UserError:
            pass
    raise UserError("the normal value range of each target comes from calibration data: pass "
                    "--calibration DATA.npz (arrays 'x' or one per input name) or --range LOW,HIGH")


def layer_outputs(loaded: LoadedModel, names: Sequence[str], arrays: list[np.ndarray],
                  batch_size: int) -> list[np.ndarray]:
    """The golden output of each named layer for all inputs, run eagerly in batches (a Keras
    `predict` would first build a data pipeline and trace a function, most of the set-up of a
    small campaign)."""
    probe = keras.Model(loaded.model.inputs, [loaded.model.get_layer(n).output for n in names])
    parts = []
    for k in range(0, len(arrays[0]), batch_size):
        out = probe([a[k:k + batch_size] for a in arrays], training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def value_ranges(loaded: LoadedModel, targets: Sequence[str], arrays: list[np.ndarray]
                 ) -> dict[str, tuple[float, float]]:
    """Min and max of each target's golden activations on the calibration inputs."""
    outs = layer_outputs(loaded, targets, arrays, batch_size=128)
    ranges = {}
    for target, out in zip(targets, outs, strict=True):
        finite = out[np.isfinite(out)]
        if finite.size == 0:
            raise UserError(f"the golden activations of '{target}' are all NaN/Inf")
        ranges[target] = (float(finite.min()), float(finite.max()))
    return ranges


def error_model_name(node: Node, requested: str) -> str:
    if requested != "auto":
        return requested
    name = error_model_for_layer(node.class_name, node.config)
    if name is None:
        raise UserError(f"layer '{node.name}' ({node.class_name}) has no error model of its own; "
                        f"pass --error-model NAME (error_model: NAME in a campaign config; "
                        f"{', '.join(available_error_models())})")
    return name


def make_sites(loaded: LoadedModel, targets: Sequence[str], count: int, seed: int,
               error_model: str = "auto", calibration: str | Path | None = None,
               value_range: tuple[float, float] | None = None,
               out_of_range: str = "bounded") -> list[SiteSet]:
    """Generate `count` sites per target from its error model and its normal value range
    (`out_of_range`: how out-of-range values are drawn, see sites.OUT_OF_RANGE_MODES)."""
    models = {t: load_error_model(error_model_name(loaded.graph.node(t), error_model))
              for t in targets}
    if value_range is not None:
        ranges = dict.fromkeys(targets, value_range)
    else:
        ranges = value_ranges(loaded, targets, calibration_arrays(loaded, calibration))
    return [generate_sites(models[t], t, loaded.shapes[t], ranges[t], count, seed,
                           out_of_range=out_of_range) for t in targets]


def simulator_name(target: str) -> str:
    return f"{target}{SIMULATOR_SUFFIX}"


def patched_model(loaded: LoadedModel, site_sets: Sequence[SiteSet], active: bool = True,
                  seed: int = 0) -> keras.Model:
    """Splice one ErrorSimulator (carrying its sites) after each site set's target."""
    graph = loaded.graph.copy()
    for s in site_sets:
        if s.target not in loaded.shapes:
            raise UserError(f"the sites name node '{s.target}', which the model does not have")
        if tuple(s.shape) != tuple(loaded.shapes[s.target]):
            raise UserError(f"the sites of '{s.target}' were made for shape {tuple(s.shape)}, "
                            f"but its output shape is {loaded.shapes[s.target]}")
        layer = ErrorSimulator(num_sites=len(s), total_positions=len(s.positions),
                               max_positions=s.max_positions,
                               mode=MODE_RANDOM if active else MODE_OFF, seed=seed,
                               target=s.target, error_model=s.error_model,
                               name=simulator_name(s.target))
        graph.insert_after(s.target, node_from_layer(layer))
    model = build_model(graph)
    for s in site_sets:
        model.get_layer(simulator_name(s.target)).load_sites(s.positions, s.values, s.splits)
    return model


def check_model_output(output: str | Path) -> Path:
    """A model output path must say its format (.h5 or .keras)."""
    output = Path(output)
    if output.suffix not in (".h5", ".keras"):
        raise UserError(f"output must end in .h5 or .keras, got '{output.name}'")
    return output


def save_model(model: keras.Model, output: str | Path) -> Path:
    """Save atomically; the format follows the suffix (.h5 or .keras)."""
    output = check_model_output(output)
    with atomic_path(output) as tmp:
        model.save(tmp)
    return output


def write_json(data: Any, output: str | Path) -> None:
    import json

    write_text_atomic(output, json.dumps(data, indent=2) + "\n")


def patch(model_path: str | Path, output: str | Path, after: Sequence[str] = (),
          after_types: Sequence[str] = (), error_model: str = "auto", sites: int = 1000,
          seed: int = 0, sites_file: str | Path | None = None,
          calibration: str | Path | None = None,
          value_range: tuple[float, float] | None = None, active: bool = True,
          input_shapes: Sequence[tuple[int, ...]] | None = None,
          out_of_range: str = "bounded") -> dict[str, Any]:
    """Read, splice ErrorSimulators after the chosen nodes, and write the patched model."""
    output = check_model_output(output)  # before any work, so a bad name fails at once
    if Path(model_path).resolve() == output.resolve():
        raise UserError("the output would overwrite the input model; choose another path")
    loaded = load(model_path, input_shapes)
    if sites_file is not None:
        site_sets = load_sites(sites_file)
        if after or after_types:
            wanted = set(select_targets(loaded.graph, after, after_types))
            site_sets = [s for s in site_sets if s.target in wanted]
            missing = wanted - {s.target for s in site_sets}
            if missing:
                raise UserError(f"{sites_file} has no sites for {sorted(missing)}")
    else:
        targets = select_targets(loaded.graph, after, after_types)
        site_sets = make_sites(loaded, targets, sites, seed, error_model, calibration,
                               value_range, out_of_range)
    model = patched_model(loaded, site_sets, active=active, seed=seed)
    save_model(model, output)
    return {"output": str(output), "targets": [s.target for s in site_sets],
            "sites": {s.target: len(s) for s in site_sets},
            "error_models": {s.target: s.error_model for s in site_sets}}
