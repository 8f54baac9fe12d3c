"""The campaign targets, one registry: `classes-tool campaign` reads a config's `target` key
(default `layers`), looks the target up here and calls its `run`.

The contract every target keeps (its module's `run` function):

    run(config, source, out=None, *, resume=False, quiet=False, seed=None, workers=None,
        address=None, threads_per_worker=None) -> CampaignResult

- `config` is the mapping read once from the YAML file `source` (with
  `classes_tool.config_reader.read_yaml`, here); the target checks it against its own schema,
  relative paths taken from the config's folder;
- the results go to one store, `<out>/results.db` (`classes_tool.results.store`), one row
  per (fault, input) with the same outcome columns for every target, and the same report
  (`classes_tool.results.report`) reads them;
- the work is a list of independent, deterministic work units (a unit's rows depend on the
  seed and the unit alone), so the same rows come out however the units are scheduled: in one
  process, after a resume, or on Ray actors (`workers`/`address`).

This module imports no target: a target's module is imported when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classes_tool.config_reader import read_yaml
from classes_tool.errors import UserError
from classes_tool.results.store import CampaignResult


@dataclass(frozen=True)
class Target:
    name: str
    #: the module whose `run` keeps the contract above
    module: str
    description: str

    def run(self, config: Mapping[str, Any], source: str | Path,
            out: str | Path | None = None, *, resume: bool = False, quiet: bool = False,
            seed: int | None = None, workers: int | None = None, address: str | None = None,
            threads_per_worker: int | None = None) -> CampaignResult:
        run = importlib.import_module(self.module).run
        return run(config, Path(source), out, resume=resume, quiet=quiet, seed=seed,
                   workers=workers, address=address, threads_per_worker=threads_per_worker)


TARGETS = {t.name: t for t in (
    Target("layers", "classes_tool.campaign.runner",
           "faults after chosen nodes of a Keras model, from CLASSES error models"),
    Target("systolic", "classes_tool.systolic.target",
           "register-level faults of a systolic array running the model's matrix products"),
    Target("snn", "classes_tool.snn.target",
           "neuron and synapse faults of a spiking (LIF) network"),
)}


def target_of(config: Mapping[str, Any], source: str | Path) -> Target:
    """The target a campaign config (read from `source`) names: its `target` key, `layers`
    when absent."""
    name = config.get("target", "layers")
    if not isinstance(name, str) or name not in TARGETS:
        raise UserError(f"{source}: config key 'target' must be one of "
                        f"{', '.join(TARGETS)}, got {name!r}")
    return TARGETS[name]


def run_campaign(config_path: str | Path, out: str | Path | None = None, **options
                 ) -> CampaignResult:
    """Run (or with `resume=True` continue) the campaign of a config file, whatever its target;
    `options` are those of `Target.run`. The file is read once, here."""
    config = read_yaml(config_path)
    return target_of(config, config_path).run(config, config_path, out, **options)
