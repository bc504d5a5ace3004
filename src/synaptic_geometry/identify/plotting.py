"""The identify tool's figure: Delta-CDF per candidate with intervals, and the best two changes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

from synaptic_geometry.identify.statistics import IdentifyResult

__all__ = ["plot_result"]


def plot_result(result: IdentifyResult, figure: Figure | None = None) -> Figure:
    """A figure: Delta-CDF per candidate with intervals and the Gaussian floor, and the best two
    changes against N(0, 1).

    The share of resamples each candidate won is printed with one decimal, as in
    :meth:`IdentifyResult.summary`, so that the figure and the printed verdict agree. Draws
    into ``figure`` when given (e.g. one made by ``matplotlib.pyplot`` in a notebook), else into
    a new figure of 10 x 3.8 inches.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained") if figure is None else figure
    ax_bar, ax_cdf = fig.subplots(1, 2)
    table = result.table
    y = np.arange(len(table))[::-1]
    colors = ["tab:green" if c == result.best else "tab:gray" for c in table["candidate"]]
    if np.isfinite(result.floor[1]):
        ax_bar.axvspan(result.floor[0], result.floor[1], color="0.85", zorder=0,
                       label=f"Gaussian floor (median to {100 * result.confidence:g}%)")
    # the bootstrap interval need not contain the estimate (see identify_measurements): draw both
    ax_bar.hlines(y, table["ci_low"], table["ci_high"], color="black", lw=2, label="bootstrap interval")
    ax_bar.scatter(table["delta_cdf"], y, c=colors, zorder=3, s=40, label="Delta-CDF of the data")
    ax_bar.set_yticks(y, [f"{c}\n(best in {100 * f:.1f}%)" for c, f in zip(table["candidate"], table["best_fraction"])])
    statistic = "centred " if result.centered else ""
    ax_bar.set_xlabel(f"{statistic}Delta-CDF (lower = more Gaussian), {100 * result.confidence:g}% bootstrap interval")
    ax_bar.set_xlim(left=0)
    ax_bar.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    ax_bar.set_title(f"{result.n_synapses} {result.unit}: best {result.best}" + ("" if result.decisive else " (not decisive)"))
    grid = np.linspace(-4, 4, 400)
    ax_cdf.plot(grid, norm.cdf(grid), color="black", lw=2, label="N(0, 1)")
    for name, color in ((result.best, "tab:green"), (result.runner_up, "tab:orange")):
        change = result.changes[name]
        if result.centered:
            change = change - np.mean(change)
        z = np.sort(change / np.std(change))
        ax_cdf.step(z, np.arange(1, z.size + 1) / z.size, where="post", color=color, label=name)
    ax_cdf.set_xlim(-4, 4)
    ax_cdf.set_xlabel(("centred " if result.centered else "") + "dual change / its standard deviation")
    ax_cdf.set_ylabel("empirical CDF")
    ax_cdf.set_title("changes of the best two candidates")
    ax_cdf.legend(loc="upper left")
    return fig
