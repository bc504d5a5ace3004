"""Writing the identify tool's figure and table: checked first, each under a temporary name, then renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from synaptic_geometry.identify.errors import MeasurementError
from synaptic_geometry.identify.plotting import plot_result
from synaptic_geometry.identify.statistics import IdentifyResult

__all__ = ["FIGURE_SUFFIXES", "TABLE_SUFFIXES", "check_output", "write_outputs"]

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
TABLE_SUFFIXES = (".csv", ".json")


def check_output(path: str | Path | None, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an output path with the wrong suffix or in a folder that does not exist."""
    if path is None:
        return
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise MeasurementError(f"{what} {path} must end in one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise MeasurementError(f"cannot write {what} {path}: folder {path.parent} does not exist")


def write_outputs(
    result: IdentifyResult, figure: str | Path | None = None, table: str | Path | None = None,
    extra: dict | None = None,
) -> None:
    """Write the figure and/or table, each to a temporary name first; nothing stays on failure.

    A ``.csv`` table holds the candidates' rows; a ``.json`` table adds the verdict and ``extra``
    (for count data: the dequantisation, connections that appeared or vanished, the floor).
    """
    figure = Path(figure) if figure is not None else None
    table = Path(table) if table is not None else None
    check_output(figure, FIGURE_SUFFIXES, "figure")
    check_output(table, TABLE_SUFFIXES, "table")
    temporary: list[tuple[Path, Path]] = []
    try:
        if figure is not None:
            tmp = figure.with_name(f".{figure.name}.{os.getpid()}.partial{figure.suffix}")
            temporary.append((tmp, figure))
            plot_result(result).savefig(tmp, dpi=150)
        if table is not None:
            tmp = table.with_name(f".{table.name}.{os.getpid()}.partial")
            temporary.append((tmp, table))
            if table.suffix.lower() == ".csv":
                result.table.to_csv(tmp, index=False)
            else:
                tmp.write_text(json.dumps({**result.to_dict(), **(extra or {})}, indent=2))
        for tmp, final in temporary:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temporary:
            tmp.unlink(missing_ok=True)
