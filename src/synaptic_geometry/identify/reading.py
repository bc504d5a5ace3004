"""Reading paired synapse measurements from two CSV files (one synapse per row, with a header line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synaptic_geometry.identify.errors import MeasurementError, show

__all__ = ["Measurements", "read_measurements"]

_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


@dataclass
class Measurements:
    """Paired measurements: ``before[i]`` and ``after[i]`` are the same synapse, named ``labels[i]``."""

    before: np.ndarray
    after: np.ndarray
    labels: list[str]


def _read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"cannot read {path}: no such file")
    try:
        # blank lines are kept: in a one-column file a blank line is a missing value, and
        # skipping it would silently shift every later synapse to the wrong partner
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise MeasurementError(f"{path} is empty; expected a CSV file with a header line and one synapse per row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MeasurementError(f"{path} is not a readable CSV file ({error})") from None
    table.columns = [str(c).strip() for c in table.columns]
    table = table.fillna("")
    blank = (table.apply(lambda col: col.str.strip()) == "").all(axis=1).to_numpy()
    if blank.any() and blank[-1]:  # blank lines at the very end of the file are not rows
        table = table.iloc[: len(blank) - np.argmin(blank[::-1])] if not blank.all() else table.iloc[:0]
    if table.empty:
        raise MeasurementError(f"{path} has a header but no rows; expected one synapse per row")
    return table


def _pick_column(table: pd.DataFrame, column: str | None, path: Path, what: str, exclude: str | None = None) -> str:
    if column is not None:
        if column not in table.columns:
            raise MeasurementError(
                f"{path} has no {what} column {column!r}; its columns are: {show(table.columns)}"
            )
        return column
    others = [c for c in table.columns if c != exclude]
    if len(others) == 1:
        return others[0]
    if "weight" in table.columns:
        return "weight"
    raise MeasurementError(
        f"{path} has {len(table.columns)} columns ({show(table.columns)}) and none is called 'weight'; "
        "name the value column with --column"
    )


def _parse_values(texts: pd.Series, path: Path, column: str) -> np.ndarray:
    """Numbers from text; missing and non-numeric cells are errors naming their CSV lines."""
    stripped = texts.str.strip()
    missing = stripped.str.lower().isin(_MISSING_TEXT)
    values = pd.to_numeric(stripped.where(~missing), errors="coerce").to_numpy(dtype=float)
    lines = np.arange(len(texts)) + 2  # the header is line 1
    bad = ~missing.to_numpy() & np.isnan(values)
    if bad.any():
        examples = [f"line {ln}: {t!r}" for ln, t in zip(lines[bad], texts[bad])]
        raise MeasurementError(f"{path} column {column!r} has non-numeric values ({show(examples, 5)}); expected numbers")
    if missing.any():
        raise MeasurementError(
            f"{path} column {column!r} has missing values (empty or NaN) on lines {show(lines[missing.to_numpy()])}; "
            "every synapse needs a measured value (remove incomplete synapses from both files)"
        )
    infinite = ~np.isfinite(values)
    if infinite.any():
        raise MeasurementError(f"{path} column {column!r} has infinite values on lines {show(lines[infinite])}")
    return values


def read_measurements(
    before_path: str | Path,
    after_path: str | Path,
    column: str | None = None,
    id_column: str | None = None,
) -> Measurements:
    """Read paired measurements from two CSV files (one synapse per row, with a header line).

    ``column`` names the value column in both files (default: the only column besides the id
    column, else ``weight``).
    Without ``id_column`` the files are paired row by row and must have equal length; with it,
    rows are paired by that column's values, which must be unique in each file and identical as sets.
    """
    paths = Path(before_path), Path(after_path)
    tables = [_read_table(p) for p in paths]
    columns = [_pick_column(t, column, p, "value", exclude=id_column) for t, p in zip(tables, paths)]
    values = [_parse_values(t[c], p, c) for t, c, p in zip(tables, columns, paths)]
    if id_column is None:
        if len(values[0]) != len(values[1]):
            raise MeasurementError(
                f"{paths[0]} has {len(values[0])} rows but {paths[1]} has {len(values[1])}; paired by row the files "
                "need equal length (or give --id-column to pair synapses by id)"
            )
        labels = [f"line {i + 2}" for i in range(len(values[0]))]
        return Measurements(values[0], values[1], labels)
    ids = []
    for table, path in zip(tables, paths):
        _pick_column(table, id_column, path, "id")
        found = table[id_column].str.strip()
        duplicated = found[found.duplicated()].unique()
        if len(duplicated):
            raise MeasurementError(f"{path} has duplicated ids in column {id_column!r}: {show(duplicated)}; each synapse needs one row")
        empty = found == ""
        if empty.any():
            lines = np.flatnonzero(empty.to_numpy()) + 2
            raise MeasurementError(f"{path} has empty ids in column {id_column!r} on lines {show(lines)}")
        ids.append(found.to_list())
    only_before = [i for i in ids[0] if i not in set(ids[1])]
    only_after = [i for i in ids[1] if i not in set(ids[0])]
    if only_before or only_after:
        parts = []
        if only_before:
            parts.append(f"ids only in {paths[0]}: {show(only_before)}")
        if only_after:
            parts.append(f"ids only in {paths[1]}: {show(only_after)}")
        raise MeasurementError("unpaired synapses; " + "; ".join(parts) + ". Every id must appear in both files")
    position = {key: k for k, key in enumerate(ids[1])}
    order = np.array([position[key] for key in ids[0]], dtype=int)
    return Measurements(values[0], values[1][order], [f"id {key}" for key in ids[0]])


