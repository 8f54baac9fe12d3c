"""Describe a model file, generate injection sites for chosen nodes, and write a patched copy.

This is the Python API behind `classes-tool describe | sites | patch`. The model is opened
through `classes_tool.session` (as every campaign target opens it); this module adds what
patching alone does: sites per target, `ErrorSimulator` layers spliced after the targets, the
patched file written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.files import atomic_path, write_text_atomic
from classes_tool.graph import build_model
from classes_tool.graph.transform import node_from_layer
from classes_tool.session import (
    ModelSession,
    calibration_arrays,
    error_model_name,
    load,
    select_targets,
    value_ranges,
)
from classes_tool.simulator.error_model import error_model_for_layer, load_error_model
from classes_tool.simulator.layer import MODE_OFF, MODE_RANDOM, ErrorSimulator
from classes_tool.simulator.sites import SiteSet, generate_sites, load_sites

SIMULATOR_SUFFIX = "_error_sim"

def describe(loaded: ModelSession) -> dict[str, Any]:
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


def make_sites(loaded: ModelSession, targets: Sequence[str], count: int, seed: int,
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


def patched_model(loaded: ModelSession, site_sets: Sequence[SiteSet], active: bool = True,
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

