"""Identify the geometry of plasticity from synapses measured before and after learning.

Given one number per synapse before learning and one after (spine volumes, synapse areas, EPSP
amplitudes; inhibitory synapses may be entered as negative numbers), this module computes for each
candidate potential the Delta-CDF of the change in that potential's dual space, with bootstrap
confidence intervals over synapses, and says which candidate makes the change most Gaussian and
how decisively it wins.

Python::

    from synaptic_geometry.identify.tool import identify_measurements
    result = identify_measurements(before, after, n_boot=1000, seed=0)
    result.table        # candidate, delta_cdf, ci_low, ci_high, best_fraction
    result.best, result.best_fraction, result.margin, result.margin_ci

Command line (``synaptic-geometry identify`` or ``python -m synaptic_geometry.identify.tool``)::

    synaptic-geometry identify BEFORE.csv AFTER.csv --column size --id-column synapse \\
        --figure identify.png --table identify.csv

Bad input raises :class:`MeasurementError` (the command prints it and exits with status 1) and
nothing is written. Outputs are written only after every step succeeded, each under a temporary
name and then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from synaptic_geometry.experiments.biology import simulate_measurements
from synaptic_geometry.gaussianity import delta_cdf, dual_change
from synaptic_geometry.infra.store import cached
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, get_potential

__all__ = [
    "MIN_SYNAPSES",
    "INVALID_POLICIES",
    "MeasurementError",
    "Measurements",
    "IdentifyResult",
    "read_measurements",
    "identify_measurements",
    "calibrate",
    "cached_calibration",
    "plot_result",
    "write_outputs",
    "main",
]

INVALID_POLICIES = ("error", "drop_rows", "drop_candidates")

#: Fewest synapses the tool accepts (after any dropped rows). Below 20 the empirical CDF moves in
#: steps of 5% or more, an exactly Gaussian sample already has a Delta-CDF comparable to the gaps
#: between candidates, and bootstrap resamples repeat a handful of values, so percentile intervals
#: mean little. Twenty is a floor for the arithmetic, not a recommendation: the power analysis in
#: the book's biology chapter shows how many synapses a decisive answer needs.
MIN_SYNAPSES = 20

_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
_TABLE_SUFFIXES = (".csv", ".json")


class MeasurementError(ValueError):
    """Input the tool cannot use; the message says what was wrong and what is accepted."""


# --------------------------------------------------------------------------- reading
@dataclass
class Measurements:
    """Paired measurements: ``before[i]`` and ``after[i]`` are the same synapse, named ``labels[i]``."""

    before: np.ndarray
    after: np.ndarray
    labels: list[str]


def _show(items: Sequence, limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


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
                f"{path} has no {what} column {column!r}; its columns are: {_show(table.columns)}"
            )
        return column
    others = [c for c in table.columns if c != exclude]
    if len(others) == 1:
        return others[0]
    if "weight" in table.columns:
        return "weight"
    raise MeasurementError(
        f"{path} has {len(table.columns)} columns ({_show(table.columns)}) and none is called 'weight'; "
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
        raise MeasurementError(f"{path} column {column!r} has non-numeric values ({_show(examples, 5)}); expected numbers")
    if missing.any():
        raise MeasurementError(
            f"{path} column {column!r} has missing values (empty or NaN) on lines {_show(lines[missing.to_numpy()])}; "
            "every synapse needs a measured value (remove incomplete synapses from both files)"
        )
    infinite = ~np.isfinite(values)
    if infinite.any():
        raise MeasurementError(f"{path} column {column!r} has infinite values on lines {_show(lines[infinite])}")
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
            raise MeasurementError(f"{path} has duplicated ids in column {id_column!r}: {_show(duplicated)}; each synapse needs one row")
        empty = found == ""
        if empty.any():
            lines = np.flatnonzero(empty.to_numpy()) + 2
            raise MeasurementError(f"{path} has empty ids in column {id_column!r} on lines {_show(lines)}")
        ids.append(found.to_list())
    only_before = [i for i in ids[0] if i not in set(ids[1])]
    only_after = [i for i in ids[1] if i not in set(ids[0])]
    if only_before or only_after:
        parts = []
        if only_before:
            parts.append(f"ids only in {paths[0]}: {_show(only_before)}")
        if only_after:
            parts.append(f"ids only in {paths[1]}: {_show(only_after)}")
        raise MeasurementError("unpaired synapses; " + "; ".join(parts) + ". Every id must appear in both files")
    position = {key: k for k, key in enumerate(ids[1])}
    order = np.array([position[key] for key in ids[0]], dtype=int)
    return Measurements(values[0], values[1][order], [f"id {key}" for key in ids[0]])


# --------------------------------------------------------------------------- identification
@dataclass
class IdentifyResult:
    """What :func:`identify_measurements` found; ``table`` is sorted best first."""

    table: pd.DataFrame            # candidate, delta_cdf, ci_low, ci_high, best_fraction
    best: str
    runner_up: str
    best_fraction: float           # share of bootstrap resamples in which ``best`` is lowest
    margin: float                  # delta_cdf(runner_up) - delta_cdf(best), > 0
    margin_ci: tuple[float, float] # paired bootstrap interval of the margin
    decisive: bool                 # margin interval above 0 and best_fraction >= confidence
    n_synapses: int
    n_boot: int
    confidence: float
    seed: int
    changes: dict[str, np.ndarray] = field(repr=False)   # dual change per candidate (analysed rows)
    dropped_rows: list[str] = field(default_factory=list)
    dropped_candidates: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines of text for people: the table and the verdict."""
        level = f"{100 * self.confidence:g}%"
        lines = [
            f"{self.n_synapses} synapses, {self.n_boot} bootstrap resamples, {level} intervals",
            self.table.to_string(index=False, float_format=lambda x: f"{x:.4f}"),
            f"best: {self.best} (lowest Delta-CDF in {100 * self.best_fraction:.1f}% of resamples); "
            f"margin to {self.runner_up}: {self.margin:.4f} [{self.margin_ci[0]:.4f}, {self.margin_ci[1]:.4f}]",
            "verdict: " + ("decisive" if self.decisive else
                           "not decisive (the interval of the margin reaches 0 or the best wins too rarely)"),
        ]
        if self.dropped_rows:
            lines.append(f"dropped {len(self.dropped_rows)} row(s) unusable by sign-keeping candidates: {_show(self.dropped_rows)}")
        if self.dropped_candidates:
            lines.append(f"dropped candidate(s): {', '.join(self.dropped_candidates)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready summary (without the per-synapse changes)."""
        return {
            "table": self.table.to_dict(orient="records"),
            "best": self.best,
            "runner_up": self.runner_up,
            "best_fraction": self.best_fraction,
            "margin": self.margin,
            "margin_ci": list(self.margin_ci),
            "decisive": self.decisive,
            "n_synapses": self.n_synapses,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "seed": self.seed,
            "dropped_rows": self.dropped_rows,
            "dropped_candidates": self.dropped_candidates,
        }


def _as_vector(x, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise MeasurementError(f"{what} must be numbers, got values that are not") from None
    if arr.ndim != 1:
        raise MeasurementError(f"{what} must be one-dimensional (one value per synapse), got shape {arr.shape}")
    return arr


def _sign_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Rows a sign-keeping potential cannot use: a zero, or a sign that changed."""
    return (before == 0) | (after == 0) | (np.sign(before) != np.sign(after))


def identify_measurements(
    before,
    after,
    candidates: Sequence[str] = CANDIDATE_POTENTIALS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    centered: bool = False,
    invalid: str = "error",
    labels: Sequence[str] | None = None,
) -> IdentifyResult:
    """Delta-CDF of each candidate's dual change, with bootstrap intervals and a verdict.

    ``before`` and ``after`` hold one value per synapse, paired by position. Candidates that keep
    signs (``negative_entropy``) cannot use synapses that are zero or change sign; ``invalid``
    says what to do about them: ``"error"`` (default: refuse, naming the rows), ``"drop_rows"``
    (analyse the other synapses with every candidate) or ``"drop_candidates"`` (drop the
    sign-keeping candidates). A sign change is itself evidence against a sign-keeping geometry.

    Bootstrap: ``n_boot`` resamples of synapses (with replacement, seeded by ``seed``); every
    candidate is scored on the same resample, so ``best_fraction`` and the paired ``margin``
    interval compare candidates fairly. Intervals are percentile intervals at level
    ``confidence`` of the resampled Delta-CDFs. A resample repeats some synapses, and the
    repeats make its empirical CDF step further from the normal one, so resampled Delta-CDFs
    run higher than the data's, most of all for a nearly Gaussian candidate: its interval may
    lie entirely above its estimate. The same effect shrinks the resampled margin of the best
    candidate, so ``best_fraction`` and ``margin_ci`` err on the side of "not decisive".
    """
    before, after = _as_vector(before, "before"), _as_vector(after, "after")
    if before.size != after.size:
        raise MeasurementError(f"before has {before.size} values but after has {after.size}; they must be paired one to one")
    labels = [f"index {i}" for i in range(before.size)] if labels is None else list(labels)
    if len(labels) != before.size:
        raise MeasurementError(f"labels has {len(labels)} entries for {before.size} synapses")
    for arr, what in ((before, "before"), (after, "after")):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise MeasurementError(f"{what} has NaN or infinite values at {_show(np.asarray(labels)[bad])}; every synapse needs a finite value")
    if invalid not in INVALID_POLICIES:
        raise MeasurementError(f"invalid={invalid!r} is not a policy; choose one of {', '.join(INVALID_POLICIES)}")
    if not 0 < confidence < 1:
        raise MeasurementError(f"confidence must be between 0 and 1, got {confidence}")
    if int(n_boot) != n_boot or n_boot < 100:
        raise MeasurementError(f"n_boot must be an integer >= 100 for percentile intervals, got {n_boot}")
    n_boot = int(n_boot)
    try:
        phis = [get_potential(c) for c in candidates]
    except (ValueError, TypeError) as error:
        raise MeasurementError(str(error)) from None
    names = [p.name for p in phis]
    if len(set(names)) != len(names):
        raise MeasurementError(f"candidates repeat a potential: {names}")
    if len(phis) < 2:
        raise MeasurementError(f"need at least two candidates to compare, got {names}")

    dropped_rows: list[str] = []
    dropped_candidates: list[str] = []
    unusable = _sign_rows(before, after)
    keepers = [p.name for p in phis if p.keeps_sign]
    if keepers and unusable.any():
        where = np.asarray(labels)[unusable]
        if invalid == "error":
            zeros = int(((before == 0) | (after == 0)).sum())
            raise MeasurementError(
                f"{', '.join(keepers)} keeps every synapse's sign, but {int(unusable.sum())} synapse(s) are zero or "
                f"change sign ({zeros} with a zero): {_show(where)}. A sign change rules out a sign-keeping "
                "geometry; to analyse anyway, drop these rows (--drop-rows) or drop the sign-keeping "
                "candidates (--drop-candidates)"
            )
        if invalid == "drop_rows":
            dropped_rows = list(where)
            keep = ~unusable
            before, after, labels = before[keep], after[keep], [lab for lab, k in zip(labels, keep) if k]
        else:
            dropped_candidates = keepers
            phis = [p for p in phis if not p.keeps_sign]
            names = [p.name for p in phis]
            if len(phis) < 2:
                raise MeasurementError(f"after dropping {', '.join(keepers)} fewer than two candidates remain ({names})")
    n = before.size
    if n < MIN_SYNAPSES:
        raise MeasurementError(
            f"{n} synapses{' after dropping rows' if dropped_rows else ''}; the test needs at least {MIN_SYNAPSES} "
            "(and usually hundreds for a decisive answer)"
        )
    if np.all(before == after):
        raise MeasurementError("before and after are identical for every synapse: there is no change to analyse")

    changes = {}
    for phi in phis:
        try:
            changes[phi.name] = dual_change(before, after, phi)
        except ValueError as error:
            raise MeasurementError(f"candidate {phi.name} cannot be evaluated on these values: {error}") from None
    for name, change in changes.items():
        if not np.std(change) > 0:
            raise MeasurementError(f"the change under {name} is the same for every synapse; Delta-CDF needs a spread")
    full = np.array([delta_cdf(changes[name], centered=centered) for name in names])

    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        for k, name in enumerate(names):
            resampled = changes[name][idx]
            boot[b, k] = delta_cdf(resampled, centered=centered) if np.std(resampled) > 0 else np.inf
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    wins = np.bincount(np.argmin(boot, axis=1), minlength=len(names)) / n_boot
    order = np.argsort(full, kind="stable")
    best, second = int(order[0]), int(order[1])
    paired = boot[:, second] - boot[:, best]
    margin_ci = tuple(float(q) for q in np.quantile(paired, [alpha, 1 - alpha]))
    table = pd.DataFrame(
        {"candidate": names, "delta_cdf": full, "ci_low": low, "ci_high": high, "best_fraction": wins}
    ).iloc[order].reset_index(drop=True)
    return IdentifyResult(
        table=table,
        best=names[best],
        runner_up=names[second],
        best_fraction=float(wins[best]),
        margin=float(full[second] - full[best]),
        margin_ci=margin_ci,
        decisive=bool(margin_ci[0] > 0 and wins[best] >= confidence),
        n_synapses=n,
        n_boot=n_boot,
        confidence=float(confidence),
        seed=int(seed),
        changes={name: changes[name] for name in names},
        dropped_rows=dropped_rows,
        dropped_candidates=dropped_candidates,
    )


# --------------------------------------------------------------------------- calibration
def calibrate(
    n_values: Sequence[int],
    true_potentials: Sequence[str] = ("negative_entropy", "2-norm", "3-norm"),
    candidates: Sequence[str] = CANDIDATE_POTENTIALS,
    reps: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    invalid: str = "drop_candidates",
    **condition,
) -> dict[str, np.ndarray]:
    """How often the verdict is decisive, and decisive but wrong, on simulated experiments.

    Simulates ``reps`` experiments per true potential and synapse count with
    :func:`synaptic_geometry.experiments.biology.simulate_measurements` (keyword arguments ``condition``),
    runs :func:`identify_measurements` with the given ``invalid`` policy (used only when some
    synapse is zero or changes sign), and returns ``best_correct``,
    ``decisive`` and ``decisive_wrong`` (shares; truth x n) and ``best_fraction`` (mean; truth x n).
    """

    truths = [get_potential(t).name for t in true_potentials]
    shape = (len(truths), len(n_values))
    out = {key: np.zeros(shape) for key in ("best_correct", "decisive", "decisive_wrong", "best_fraction")}
    children = np.random.SeedSequence(seed).spawn(len(truths) * len(n_values))
    for i, truth in enumerate(truths):
        for j, n in enumerate(n_values):
            rng = np.random.default_rng(children[i * len(n_values) + j])
            for _ in range(reps):
                before, after = simulate_measurements(int(n), truth, rng, **condition)
                result = identify_measurements(
                    before, after, candidates, n_boot=n_boot, seed=int(rng.integers(2**32)), invalid=invalid
                )
                right = result.best == truth
                out["best_correct"][i, j] += right / reps
                out["decisive"][i, j] += result.decisive / reps
                out["decisive_wrong"][i, j] += (result.decisive and not right) / reps
                out["best_fraction"][i, j] += result.best_fraction / reps
    out["true_potentials"] = np.array(truths, dtype=str)
    out["n_values"] = np.asarray(n_values, dtype=np.int64)
    return out


def cached_calibration(
    n_values, reps=20, n_boot=200, seed=0, invalid="drop_candidates", root=None, **condition
) -> dict[str, np.ndarray]:
    """:func:`calibrate` (default candidates and truths) through the results store."""

    params = {"n_values": [int(n) for n in n_values], "reps": int(reps), "n_boot": int(n_boot),
              "seed": int(seed), "invalid": invalid, "condition": dict(condition)}
    return cached(
        "identify_calibration", params,
        lambda: calibrate(n_values, reps=reps, n_boot=n_boot, seed=seed, invalid=invalid, **condition), root=root,
    )


# --------------------------------------------------------------------------- figure and files
def plot_result(result: IdentifyResult):
    """A figure: Delta-CDF per candidate with intervals, and the best two changes against N(0, 1)."""
    from matplotlib.figure import Figure
    from scipy.stats import norm

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_bar, ax_cdf = fig.subplots(1, 2)
    table = result.table
    y = np.arange(len(table))[::-1]
    colors = ["tab:green" if c == result.best else "tab:gray" for c in table["candidate"]]
    # the bootstrap interval need not contain the estimate (see identify_measurements): draw both
    ax_bar.hlines(y, table["ci_low"], table["ci_high"], color="black", lw=2, label="bootstrap interval")
    ax_bar.scatter(table["delta_cdf"], y, c=colors, zorder=3, s=40, label="Delta-CDF of the data")
    ax_bar.set_yticks(y, [f"{c}\n(best in {100 * f:.0f}%)" for c, f in zip(table["candidate"], table["best_fraction"])])
    ax_bar.set_xlabel(f"Delta-CDF (lower = more Gaussian), {100 * result.confidence:g}% bootstrap interval")
    ax_bar.set_xlim(left=0)
    ax_bar.set_title(f"{result.n_synapses} synapses: best {result.best}" + ("" if result.decisive else " (not decisive)"))
    grid = np.linspace(-4, 4, 400)
    ax_cdf.plot(grid, norm.cdf(grid), color="black", lw=2, label="N(0, 1)")
    for name, color in ((result.best, "tab:green"), (result.runner_up, "tab:orange")):
        change = result.changes[name]
        z = np.sort(change / np.std(change))
        ax_cdf.step(z, np.arange(1, z.size + 1) / z.size, where="post", color=color, label=name)
    ax_cdf.set_xlim(-4, 4)
    ax_cdf.set_xlabel("dual change / its standard deviation")
    ax_cdf.set_ylabel("empirical CDF")
    ax_cdf.set_title("changes of the best two candidates")
    ax_cdf.legend(loc="upper left")
    return fig


def _check_output(path: Path | None, suffixes: tuple[str, ...], what: str) -> None:
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise MeasurementError(f"{what} {path} must end in one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise MeasurementError(f"cannot write {what} {path}: folder {path.parent} does not exist")


def write_outputs(result: IdentifyResult, figure: str | Path | None = None, table: str | Path | None = None) -> None:
    """Write the figure and/or table, each to a temporary name first; nothing stays on failure."""
    figure = Path(figure) if figure is not None else None
    table = Path(table) if table is not None else None
    _check_output(figure, _FIGURE_SUFFIXES, "figure")
    _check_output(table, _TABLE_SUFFIXES, "table")
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
                tmp.write_text(json.dumps(result.to_dict(), indent=2))
        for tmp, final in temporary:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temporary:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- command line
def build_parser(prog: str = "synaptic-geometry identify") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Which geometry of plasticity makes the change of these synapses most Gaussian? "
            "Reads one value per synapse before (BEFORE.csv) and after (AFTER.csv) learning and "
            "reports Delta-CDF per candidate potential with bootstrap intervals."
        ),
    )
    parser.add_argument("before", metavar="BEFORE.csv", help="measurements before learning (CSV with a header line)")
    parser.add_argument("after", metavar="AFTER.csv", help="measurements after learning, same synapses")
    parser.add_argument("--column", help="value column in both files (default: the only column besides the id column, else 'weight')")
    parser.add_argument("--id-column", help="pair synapses by this column instead of by row order")
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATE_POTENTIALS),
        help="comma-separated potentials, e.g. 'negative_entropy,2-norm,3-norm,hypentropy:0.1' (default: %(default)s)",
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: %(default)s)")
    parser.add_argument("--centered", action="store_true", help="centre the change before comparing with N(0, 1)")
    drop = parser.add_mutually_exclusive_group()
    drop.add_argument("--drop-rows", action="store_true", help="drop synapses that are zero or change sign (reported)")
    drop.add_argument("--drop-candidates", action="store_true", help="drop sign-keeping candidates if any synapse is zero or changes sign")
    parser.add_argument("--figure", default="identify.png", help="figure path, .png/.pdf/.svg (default: %(default)s)")
    parser.add_argument("--table", help="also write the table, .csv or .json (json adds the verdict)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "synaptic-geometry identify") -> int:
    """Command-line entry point; returns the exit status (0 success, 1 bad input, 2 bad options)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or an option error already printed by argparse
        return int(stop.code or 0)
    invalid = "drop_rows" if args.drop_rows else "drop_candidates" if args.drop_candidates else "error"
    try:
        _check_output(Path(args.figure), _FIGURE_SUFFIXES, "figure")
        _check_output(Path(args.table) if args.table else None, _TABLE_SUFFIXES, "table")
        data = read_measurements(args.before, args.after, args.column, args.id_column)
        candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
        result = identify_measurements(
            data.before, data.after, candidates, n_boot=args.n_boot, seed=args.seed,
            confidence=args.confidence, centered=args.centered, invalid=invalid, labels=data.labels,
        )
        write_outputs(result, args.figure, args.table)
    except MeasurementError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"figure: {args.figure}" + (f"; table: {args.table}" if args.table else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m synaptic_geometry.identify.tool"))
