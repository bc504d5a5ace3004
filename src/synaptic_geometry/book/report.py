"""Tables, figures and numbers of the book: how a chapter hands its results to the page.

A chapter computes a result with one visible call, then hands it to the page through ``glue``
(myst-nb) so that prose, tables and figures show the value that ran and nothing is typed by
hand:

* :func:`glue_figure` glues a matplotlib figure; the page shows it with a numbered
  ``{glue:figure}`` directive that carries the caption and the alt text;
* :func:`glue_table` glues a formatted Markdown table; the page wraps it in a numbered
  ``{table}`` directive with its caption;
* :func:`glue_values` glues numbers and words that the prose quotes with ``{glue:text}``;
* :func:`glue_parameters` glues the table of the parameters that ran, with their meanings.

Formatting rules, the same in every chapter: human column names, no positional index, numbers
to a stated count of significant digits (small and large ones in scientific notation), booleans as
"yes"/"no", missing values as an en dash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from synaptic_geometry.book.build import load_meanings

__all__ = [
    "MISSING",
    "format_value",
    "glue_figure",
    "glue_parameters",
    "glue_table",
    "glue_values",
    "markdown_table",
    "parameter_table",
]

MISSING = "–"


def format_value(value: object, digits: int = 3, exact: bool = False) -> str:
    """One table cell or quoted number as text.

    Parameters
    ----------
    value
        A number, boolean, string, sequence or missing value.
    digits
        Significant digits of a non-integer number.
    exact
        Show numbers as given, shortest form (``0.05``, ``1e-06``), for parameters that were set
        rather than measured.

    Returns
    -------
    str
        Integers in full; other numbers to ``digits`` significant digits, in scientific
        notation (``1.2e-06``) below 1e-3 or from 1e6 in magnitude; booleans as "yes"/"no";
        None, NaN and empty sequences or mappings as an en dash; sequences as comma-separated
        values; mappings as ``key: value`` pairs.
    """
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x == 0:
            return "0"
        if exact:
            return f"{x:g}" if abs(x) >= 1e-4 else f"{x:.0e}".replace("e-0", "e-")
        if x == round(x) and abs(x) < 1e6 and digits >= len(str(int(abs(x)))):
            return str(int(x))
        if abs(x) < 1e-3 or abs(x) >= 1e6:
            return f"{x:.{digits - 1}e}"
        return f"{x:#.{digits}g}".rstrip(".") if abs(x) < 10 ** digits else f"{x:.0f}"
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, Sequence, np.ndarray)) and len(value) == 0:
        return MISSING
    if isinstance(value, Mapping):
        return "; ".join(f"{key}: {format_value(item, digits, exact)}" for key, item in value.items())
    if isinstance(value, (Sequence, np.ndarray)):
        return ", ".join(format_value(item, digits, exact) for item in value)
    return str(value)


def markdown_table(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    digits: int | Mapping[str, int] = 3,
) -> str:
    """A DataFrame as a Markdown table, formatted by :func:`format_value`.

    Parameters
    ----------
    frame
        The rows to show; its index is dropped (put anything worth showing in a column).
    columns
        Column name -> header shown to the reader. When given, only these columns are shown,
        in this order; names missing from ``frame`` raise ``KeyError``.
    digits
        Significant digits for every column, or per column (default 3 for columns not listed).

    Returns
    -------
    str
        A pipe table (header, alignment row, one line per row; numbers right-aligned).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if columns is not None:
        missing = [name for name in columns if name not in frame.columns]
        if missing:
            raise KeyError(f"columns {missing} not in the table; it has {list(frame.columns)}")
        frame = frame[list(columns)].rename(columns=dict(columns))
    per_column = digits if isinstance(digits, Mapping) else {}
    default_digits = 3 if isinstance(digits, Mapping) else digits
    if columns is not None and per_column:
        per_column = {columns.get(name, name): value for name, value in per_column.items()}
    headers = [str(name) for name in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name])
               for name in frame.columns]
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if is_number else ":---" for is_number in numeric) + "|"]
    for row in frame.itertuples(index=False):
        cells = [format_value(value, per_column.get(header, default_digits)) for header, value in zip(headers, row)]
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def glue_table(
    key: str,
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    digits: int | Mapping[str, int] = 3,
) -> str:
    """Glue ``frame`` as a formatted Markdown table under ``key`` (not displayed); return the text.

    The page shows it with::

        :::{table} Caption.
        :name: key

        ```{glue:md} key
        :format: myst
        ```
        :::
    """
    text = markdown_table(frame, columns, digits)
    glue(key, Markdown(text), display=False)
    return text


def glue_figure(key: str, figure: plt.Figure) -> None:
    """Glue a matplotlib figure under ``key`` (not displayed) and close it.

    The page shows it with a ``{glue:figure}`` directive whose ``:name:`` is ``key``, whose
    ``:alt:`` describes the image, and whose body is the caption.
    """
    if not isinstance(figure, plt.Figure):
        raise TypeError(f"expected a matplotlib Figure, got {type(figure).__name__}")
    glue(key, figure, display=False)
    plt.close(figure)


def glue_values(**values: object) -> None:
    """Glue each value under its name (not displayed), for ``{glue:text}`` in the prose.

    Numbers keep their type so the prose can format them (``{glue:text}`name:.3f```); use
    :func:`format_value` first to quote a number with significant digits.
    """
    for name, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        glue(name, value, display=False)


def parameter_table(chapter: str, values: Mapping[str, object]) -> pd.DataFrame:
    """The parameters a chapter ran with: name, value and meaning, in the profile file's order.

    Parameters
    ----------
    chapter
        The chapter's name (its notebook's file stem).
    values
        The chapter's namespace (``globals()``) or any mapping holding its parameters.

    Raises
    ------
    KeyError
        If a parameter with a meaning is missing from ``values``.
    """
    meanings = load_meanings(chapter)
    missing = [name for name in meanings if name not in values]
    if missing:
        raise KeyError(f"chapter {chapter!r}: parameters {missing} have a meaning but no value")
    rows = [{"Parameter": f"`{name}`", "Value": format_value(values[name], exact=True), "Meaning": meaning}
            for name, meaning in meanings.items()]
    return pd.DataFrame(rows)


def glue_parameters(chapter: str, values: Mapping[str, object], key: str = "tab-parameters") -> str:
    """Glue :func:`parameter_table` as a table under ``key`` and the profile's name under
    ``profile``; return the table's text."""
    glue("profile", str(values.get("profile", "default")), display=False)
    return glue_table(key, parameter_table(chapter, values))
