"""Reading paired synapse measurements from two CSV files (one synapse per row, with a header line)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synaptic_geometry.experiments.count_geometry import MatchedCounts, match_counts
from synaptic_geometry.identify.errors import MeasurementError, show
from synaptic_geometry.potentials import require_finite

__all__ = ["Measurements", "parse_where", "read_counts", "read_measurements"]

_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


@dataclass
class Measurements:
    """Paired measurements: ``before[i]`` and ``after[i]`` are the same synapse, named ``labels[i]``;
    paired by id, ``ids`` holds the id columns' values of each synapse (row ``i``), else None."""

    before: np.ndarray
    after: np.ndarray
    labels: list[str]
    ids: pd.DataFrame | None = None


def _read_table(path: str | Path, where: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The file as text cells; with ``where``, only the rows whose columns hold those values
    (the index keeps each row's position, so messages name the file's own lines)."""
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
    for name, value in (where or {}).items():
        _pick_column(table, name, path, "selection")
        table = table[table[name].str.strip() == value]
        if table.empty:
            raise MeasurementError(f"{path} has no rows where {name} is {value!r}")
    return table


def parse_where(texts: Sequence[str]) -> dict[str, str]:
    """``["type=chemical", ...]`` as ``{"type": "chemical", ...}``; a text without ``=`` is an error."""
    where = {}
    for text in texts:
        name, equals, value = str(text).partition("=")
        if not equals or not name.strip():
            raise MeasurementError(f"a row selection is written COLUMN=VALUE, e.g. type=chemical; got {text!r}")
        where[name.strip()] = value.strip()
    return where


def _pick_column(table: pd.DataFrame, column: str | None, path: Path, what: str, exclude: Sequence[str] = ()) -> str:
    if column is not None:
        if column not in table.columns:
            raise MeasurementError(
                f"{path} has no {what} column {column!r}; its columns are: {show(table.columns)}"
            )
        return column
    others = [c for c in table.columns if c not in exclude]
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
    lines = texts.index.to_numpy() + 2  # the header is line 1
    bad = ~missing.to_numpy() & np.isnan(values)
    if bad.any():
        examples = [f"line {ln}: {t!r}" for ln, t in zip(lines[bad], texts[bad])]
        raise MeasurementError(f"{path} column {column!r} has non-numeric values ({show(examples, 5)}); expected numbers")
    if missing.any():
        raise MeasurementError(
            f"{path} column {column!r} has missing values (empty or NaN) on lines {show(lines[missing.to_numpy()])}; "
            "every synapse needs a measured value (remove incomplete synapses from both files)"
        )
    require_finite(values, f"values of {path} column {column!r}", [f"line {ln}" for ln in lines], MeasurementError)
    return values


def _ids(table: pd.DataFrame, id_columns: Sequence[str], path: Path) -> list[str]:
    """One id per row (the id columns' values joined by spaces), unique and non-empty."""
    for name in id_columns:
        _pick_column(table, name, path, "id")
    cells = table[list(id_columns)].apply(lambda col: col.str.strip())
    empty = (cells == "").any(axis=1)
    if empty.any():
        raise MeasurementError(f"{path} has empty ids in column(s) {', '.join(id_columns)} on lines {show(table.index[empty] + 2)}")
    found = cells.agg(" ".join, axis=1)
    duplicated = found[found.duplicated()].unique()
    if len(duplicated):
        raise MeasurementError(f"{path} has duplicated ids in column(s) {', '.join(id_columns)}: {show(duplicated)}; "
                               "each synapse needs one row")
    return found.to_list()


def _read_pair(paths, column, id_columns, where):
    """Tables, value vectors and (with ``id_columns``) ids of both files."""
    tables = [_read_table(p, where) for p in paths]
    exclude = [*id_columns, *(where or {})]
    columns = [_pick_column(t, column, p, "value", exclude=exclude) for t, p in zip(tables, paths)]
    values = [_parse_values(t[c], p, c) for t, c, p in zip(tables, columns, paths)]
    if not id_columns and len(values[0]) != len(values[1]):
        raise MeasurementError(
            f"{paths[0]} has {len(values[0])} rows but {paths[1]} has {len(values[1])}; paired by row the files "
            "need equal length (or give --id-column to pair synapses by id)"
        )
    ids = [_ids(t, id_columns, p) for t, p in zip(tables, paths)] if id_columns else None
    return tables, values, ids


def _id_list(id_columns: str | Sequence[str] | None) -> list[str]:
    if id_columns is None:
        return []
    return [id_columns] if isinstance(id_columns, str) else list(id_columns)


def read_measurements(
    before_path: str | Path,
    after_path: str | Path,
    column: str | None = None,
    id_columns: str | Sequence[str] | None = None,
    where: Mapping[str, str] | None = None,
) -> Measurements:
    """Read paired measurements from two CSV files (one synapse per row, with a header line).

    Parameters
    ----------
    before_path, after_path
        The two files.
    column
        The value column in both files (default: the only column besides the id and selection
        columns, else ``weight``).
    id_columns
        Column(s) whose values together name a synapse. Without them the files are paired row by
        row and must have equal length; with them, rows are paired by id, which must be unique in
        each file and the same set in both.
    where
        Keep only the rows whose columns hold these values (``{"type": "chemical"}``).
    """
    paths = Path(before_path), Path(after_path)
    id_columns = _id_list(id_columns)
    tables, values, ids = _read_pair(paths, column, id_columns, where)
    if ids is None:
        return Measurements(values[0], values[1], [f"line {i + 2}" for i in tables[0].index])
    in_before, in_after = set(ids[0]), set(ids[1])
    only_before = [i for i in ids[0] if i not in in_after]
    only_after = [i for i in ids[1] if i not in in_before]
    if only_before or only_after:
        parts = []
        if only_before:
            parts.append(f"ids only in {paths[0]}: {show(only_before)}")
        if only_after:
            parts.append(f"ids only in {paths[1]}: {show(only_after)}")
        raise MeasurementError("unpaired synapses; " + "; ".join(parts) + ". Every id must appear in both files "
                               "(for counts, where a missing connection counts 0, use --counts)")
    position = {key: k for k, key in enumerate(ids[1])}
    order = np.array([position[key] for key in ids[0]], dtype=int)
    cells = tables[0][id_columns].apply(lambda col: col.str.strip()).reset_index(drop=True)
    return Measurements(values[0], values[1][order], [f"id {key}" for key in ids[0]], cells)


def _whole_numbers(values: np.ndarray, table: pd.DataFrame, path: Path) -> None:
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        examples = [f"line {i + 2}: {v:g}" for i, v in zip(table.index[bad], values[bad])]
        raise MeasurementError(f"{path} has values that are not counts (whole numbers >= 0): {show(examples, 5)}")


def read_counts(
    before_path: str | Path,
    after_path: str | Path,
    column: str | None = None,
    id_columns: str | Sequence[str] | None = None,
    where: Mapping[str, str] | None = None,
) -> MatchedCounts:
    """Read counts (synapses per connection) from two CSV files, matched by id.

    As :func:`read_measurements`, except that the values must be whole numbers >= 0 and, with
    ``id_columns``, an id listed in one file only is a connection that appeared (absent before)
    or vanished (absent after): it counts 0 on the side where it is missing. Without
    ``id_columns`` the files are paired row by row.

    Returns
    -------
    MatchedCounts
        The union of connections with both counts (``ids`` holds the id columns, or ``line``).
    """
    paths = Path(before_path), Path(after_path)
    id_columns = _id_list(id_columns)
    tables, values, ids = _read_pair(paths, column, id_columns, where)
    for v, t, p in zip(values, tables, paths):
        _whole_numbers(v, t, p)
    if ids is None:
        lines = pd.DataFrame({"line": [str(i + 2) for i in tables[0].index]})
        return MatchedCounts(lines, values[0].astype(np.int64), values[1].astype(np.int64))
    frames = [t[id_columns].apply(lambda col: col.str.strip()).assign(count=v) for t, v in zip(tables, values)]
    return match_counts(*frames, id_columns=id_columns, value_column="count")
