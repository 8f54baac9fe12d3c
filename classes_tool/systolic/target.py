"""The systolic target's side of the campaign contract (`classes_tool.targets`)."""

from __future__ import annotations

from pathlib import Path

from classes_tool.results.store import CampaignResult
from classes_tool.systolic.campaign import load_systolic_config, run_systolic_campaign


def run(config_path: str | Path, out: str | Path | None = None, *, resume: bool = False,
        quiet: bool = False, seed: int | None = None):
    """Run a systolic campaign config; a stopped one continues where its store ends (its
    faults are drawn without replacement from one ordered list, so `resume` changes
    nothing: the stored faults are always kept)."""

    result = run_systolic_campaign(load_systolic_config(config_path), out, seed, quiet)
    files = {f"report/{name}": path for name, path in result.get("report", {}).items()}
    return CampaignResult(db=Path(result["db"]), files=files)
