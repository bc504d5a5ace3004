"""Tables of the linear-regression chapter, assembled from the sweeps of :mod:`.linreg`.

Kept out of :mod:`.linreg` on purpose: a stored experiment's key contains a hash of its module, so
editing a table here does not recompute the chapter's experiments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from synaptic_geometry.experiments.linreg import floor_ratio, n_points


def growth_factor(widths: Sequence[int], ratio: float = 0.25, exponent: float = 0.5) -> float:
    """Smallest factor, over ``widths``, between N = floor(ratio * D) and N = floor(D^exponent).

    The (A1) failure compares proportional growth with the paper's growth rule; the issue asks for
    a factor of at least 5 at every width shown.
    """
    if not widths:
        raise ValueError("widths is empty")
    return float(min(int(ratio * d) / n_points(int(d), exponent) for d in widths))


LABEL_DOSE_COLUMNS = ("label_scale", "width", "lipschitz_change", "ratio", "cavity_error", "cavity_error_top", "runs")


def label_dose_table(
    runs: Mapping[float, pd.DataFrame], floor: pd.DataFrame, potential: str, widths: Sequence[int]
) -> pd.DataFrame:
    """The (A6) dose-response for one potential: one row per label scale and width of ``widths``.

    ``runs`` maps a label scale to a :func:`.linreg.failure_sweep` table; ``floor`` comes from
    :func:`.linreg.floor_reference`. Columns: label_scale, width, and medians over seeds of
    lipschitz_change (L * B_D), ratio (Delta-CDF / the floor's median), cavity_error (evenly spaced
    coordinates) and cavity_error_top (highest-leverage coordinates), nan where a table has no
    leave-one-out solves; runs counts the seeds with a finite Delta-CDF.
    """
    rows = []
    for scale, frame in runs.items():
        part = frame[(frame.potential == potential) & frame.width.isin(list(widths))]
        missing = sorted(set(int(w) for w in widths) - set(part.width.astype(int)))
        if missing:
            raise ValueError(f"label scale {scale}: no runs of {potential!r} at widths {missing}")
        ratios = floor_ratio(part.dropna(subset=["delta_cdf"]), floor, by=["width"]).set_index("width")
        for width, group in part.groupby("width"):
            rows.append({
                "label_scale": float(scale), "width": int(width),
                "lipschitz_change": float(group.lipschitz_change.median()),
                "ratio": float(ratios.loc[width, "median"]) if width in ratios.index else np.nan,
                "cavity_error": float(group.cavity_error.median()),
                "cavity_error_top": float(group.cavity_error_top.median()),
                "runs": int(group.delta_cdf.notna().sum()),
            })
    return pd.DataFrame(rows, columns=list(LABEL_DOSE_COLUMNS))
