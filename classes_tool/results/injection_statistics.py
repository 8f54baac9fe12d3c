"""Tables of per-layer injection statistics (what `train` and `sweep` measure in each
`FaultInjection` layer: see `classes_tool.quant.statistics`), for the terminal and reports."""

from __future__ import annotations

COLUMNS = ("layer", "target", "seen", "injected", "changed", "injection_rate", "change_rate",
           "rmse", "cosine", "nonfinite")


def _cells(name: str, row: dict) -> list[str]:
    return [name, str(row.get("target", "")), f"{int(row['seen'])}", f"{int(row['injected'])}",
            f"{int(row['changed'])}", f"{100 * row['injection_rate']:.3f}%",
            f"{100 * row['change_rate']:.3f}%", f"{row['rmse']:.4g}", f"{row['cosine']:.5f}",
            f"{int(row['nonfinite'])}"]


def format_table(stats: dict[str, dict]) -> str:
    """A fixed-width text table (one line per layer) for the terminal."""
    rows = [list(COLUMNS)] + [_cells(n, r) for n, r in stats.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(stats: dict[str, dict]) -> str:
    """The same table in Markdown, for campaign reports."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(n, r)) + " |" for n, r in stats.items()]
    return "\n".join(lines) + "\n"
