"""The systolic target's side of the campaign contract (`classes_tool.targets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classes_tool.results.store import CampaignResult
from classes_tool.systolic.campaign import run_systolic_campaign, systolic_config


def run(config: dict[str, Any], source: Path, out: str | Path | None = None, *,
        resume: bool = False, quiet: bool = False, seed: int | None = None,
        workers: int | None = None, address: str | None = None,
        threads_per_worker: int | None = None) -> CampaignResult:
    """Run a systolic campaign config (`resume`: continue the store an earlier run left; each
    unit is one fault on every input, on Ray actors with `workers`/`address`)."""
    result = run_systolic_campaign(systolic_config(dict(config), source), out, seed, quiet,
                                   resume=resume, workers=workers, address=address,
                                   threads_per_worker=threads_per_worker)
    files = {f"report/{name}": path for name, path in result.get("report", {}).items()}
    return CampaignResult(db=Path(result["db"]), files=files)
