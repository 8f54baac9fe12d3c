"""The file of a saved SNN campaign: JSON (rounds, settings) beside an .npz (results, if run)."""

from __future__ import annotations

import json
from pathlib import Path

from classes_tool.errors import UserError
from classes_tool.files import atomic_path, write_text_atomic

FORMAT = "classes_tool.snn.campaign/1"


def json_path(path: str | Path) -> Path:
    """`path` with the suffix .json."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    return path


def write_campaign_file(path: str | Path, settings: dict, results) -> Path:
    """Write `settings` to `path` (as .json) and `results` (if any) to the .npz beside it; an
    .npz left from an earlier save goes when there are no results."""
    path = json_path(path)
    write_text_atomic(path, json.dumps(settings, indent=1))
    npz = path.with_suffix(".npz")
    if results is not None:
        with atomic_path(npz) as tmp:
            results.save_npz(tmp)
    elif npz.exists():
        npz.unlink()
    return path


def read_campaign_file(path: str | Path) -> tuple[dict, Path]:
    """The settings saved at `path` (checked to be an SNN campaign file) and the path of the
    results .npz beside it (which may not exist)."""
    path = json_path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read campaign {path}: {exc}") from None
    if data.get("format") != FORMAT:
        raise UserError(f"{path} is not an SNN campaign file ({FORMAT})")
    return data, path.with_suffix(".npz")
