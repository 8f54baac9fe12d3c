"""The SNN target's side of the campaign contract (`classes_tool.targets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classes_tool.results.store import CampaignResult
from classes_tool.snn.runner import run_snn_campaign_from_config

#: Config keys that hold paths (taken from the config file's folder when relative).
PATH_KEYS = ("model", "data", "output")


def run(config: dict[str, Any], source: Path, out: str | Path | None = None, *,
        resume: bool = False, quiet: bool = False, seed: int | None = None,
        workers: int | None = None, address: str | None = None,
        threads_per_worker: int | None = None) -> CampaignResult:
    """Run an SNN campaign config (`resume`: continue the store an earlier run left; on Ray
    actors with `workers`/`address`)."""
    base = Path(source).resolve().parent
    raw = {k: (str(base / v) if k in PATH_KEYS and isinstance(v, str)
               and not Path(v).is_absolute() else v) for k, v in config.items()}
    out = out or raw.get("output") or Path("runs") / Path(source).stem
    seed = seed if seed is not None else raw.get("seed", 0)
    files = run_snn_campaign_from_config(raw, out, seed, quiet, source=source,
                                         workers=workers, address=address,
                                         threads_per_worker=threads_per_worker,
                                         resume=resume)
    db = files.pop("store")
    return CampaignResult(db=Path(db), files=files)
