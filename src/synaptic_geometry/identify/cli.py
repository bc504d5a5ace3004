"""The ``synaptic-geometry identify BEFORE.csv AFTER.csv`` command.

Option errors (conflicting or out-of-range options) exit with status 2 and argparse's usage line;
input the test cannot use exits with status 1; success exits with 0.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from synaptic_geometry.experiments.count_geometry import CONTRAST, individual_variability
from synaptic_geometry.identify.counts import DEQUANTISATIONS, calibrate_counts, identify_counts
from synaptic_geometry.identify.errors import MeasurementError
from synaptic_geometry.identify.outputs import FIGURE_SUFFIXES, TABLE_SUFFIXES, check_output, write_outputs
from synaptic_geometry.identify.reading import parse_where, read_counts, read_measurements
from synaptic_geometry.identify.statistics import IdentifyResult, identify_measurements
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, get_potential

__all__ = ["build_parser", "command_line", "main", "run"]

PROG = "synaptic-geometry identify"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--id-column", "--id-columns", dest="id_columns", metavar="COLUMNS",
        help="pair synapses by these comma-separated columns (e.g. 'pre,post' for a connection) instead of by row order",
    )
    parser.add_argument(
        "--where", action="append", default=[], metavar="COLUMN=VALUE",
        help="use only the rows of both files whose COLUMN holds VALUE (repeatable), e.g. type=chemical",
    )
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATE_POTENTIALS),
        help="comma-separated potentials, e.g. 'negative_entropy,2-norm,3-norm,hypentropy:0.1' (default: %(default)s)",
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default: %(default)s)")
    centring = parser.add_mutually_exclusive_group()
    centring.add_argument(
        "--centered", "--drift", dest="centered", action="store_true", default=None,
        help="centre the change before comparing with N(0, 1): use it when the synapses are expected to grow or "
             "shrink as a whole (the uncentred statistic penalises any net drift); the default with --counts",
    )
    centring.add_argument("--uncentred", dest="centered", action="store_false",
                          help="do not centre the change (the published statistic), also with --counts")
    counts = parser.add_argument_group("count data (synapses per connection)")
    counts.add_argument(
        "--counts", action="store_true",
        help="the values are counts (whole numbers >= 0): ids listed in one file only are connections that appeared "
             "or vanished (count 0), reported and not analysed; the change is centred unless --uncentred",
    )
    counts.add_argument(
        "--dequantise", choices=DEQUANTISATIONS, default=None,
        help="with --counts: 'uniform' replaces a count k by a uniform draw from [k - 1/2, k + 1/2) (the strengths "
             "that round to k), 'none' keeps the integers (default: uniform)",
    )
    counts.add_argument("--n-draws", type=int, default=None,
                        help="with --counts: dequantisation draws averaged per Delta-CDF (default: 20)")
    counts.add_argument(
        "--control", nargs=2, metavar=("BEFORE2.csv", "AFTER2.csv"),
        help="with --counts: a control pair without the change (e.g. two animals of the same age), read and scored "
             "the same way; it also estimates the individual variability used by --calibrate",
    )
    counts.add_argument(
        "--calibrate", action="store_true",
        help="with --counts: simulate counts shaped like the data under multiplicative and additive growth and test "
             "the data's contrast Delta-CDF(2-norm) - Delta-CDF(negative entropy) against both",
    )
    counts.add_argument("--calibration-reps", type=int, default=100,
                        help="with --calibrate: simulated pairs per growth geometry (default: %(default)s)")
    scale = parser.add_argument_group("neuron scale structure (measured synapses with neuron ids)")
    scale.add_argument(
        "--scale-correction", action="store_true",
        help="also report, per candidate, the scale-corrected Delta-CDF: the synapses, paired by --id-columns PRE,POST "
             "(exactly two columns, presynaptic then postsynaptic neuron id; one row per neuron pair), are arranged "
             "as a postsynaptic x presynaptic matrix of the observed pairs, each candidate's change is divided "
             "alternately by its postsynaptic and presynaptic root mean square, and it is compared with corrected "
             "Gaussian matrices of the same shape and mask, whose scores are printed as the corrected floor. Limits: "
             "it assumes a gradient-like change whose spread factorises into a presynaptic and a postsynaptic "
             "scale; each neuron's scale is estimated from its own synapses, so with few synapses per neuron the "
             "scales are noisy and the corrected statistic can name the wrong potential (it did on small "
             "convolutional layers in the book's deep-network chapter); it needs neuron ids; the corrected scores "
             "have no bootstrap interval and the figure shows the raw statistic. Not with --counts",
    )
    drop = parser.add_mutually_exclusive_group()
    drop.add_argument("--drop-rows", action="store_true", help="drop synapses that are zero or change sign (reported)")
    drop.add_argument("--drop-candidates", action="store_true", help="drop sign-keeping candidates if any synapse is zero or changes sign")
    parser.add_argument("--figure", default="identify.png", help="figure path, .png/.pdf/.svg (default: %(default)s)")
    parser.add_argument("--table", help="also write the table, .csv or .json (json adds the verdict)")
    return parser


def command_line(argv: Sequence[str], width: int = 72, prog: str = PROG) -> str:
    """``argv`` as the shell line that runs it, quoted, wrapped with backslashes at ``width``.

    An option stays on one line with its values (``--control B.csv A.csv``); lines break only
    between such groups.
    """
    groups: list[list[str]] = []
    for word in argv:
        if word.startswith("--") or not groups or not groups[-1][0].startswith("--"):
            groups.append([word])
        else:
            groups[-1].append(word)
    lines, line = [], prog
    for group in groups:
        text = " ".join(shlex.quote(word) for word in group)
        if len(line) + 1 + len(text) > width - 2 and line.strip():
            lines.append(line + " \\")
            line = "   "
        line += " " + text
    return "\n".join(lines + [line])


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> IdentifyResult:
    """The command without its printing: parse ``argv``, read the files, test, write the outputs.

    Returns the result (a :class:`~synaptic_geometry.identify.counts.CountResult` with
    ``--counts``). Raises :class:`MeasurementError` for input the test cannot use, and
    ``SystemExit`` (status 2, message on stderr) for bad or conflicting options or ``--help``
    (status 0).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    problem = _option_problem(args)
    if problem:
        parser.error(problem)
    invalid = "drop_rows" if args.drop_rows else "drop_candidates" if args.drop_candidates else "error"
    id_columns = _id_columns(args)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    check_output(args.figure, FIGURE_SUFFIXES, "figure")
    check_output(args.table, TABLE_SUFFIXES, "table")
    where = parse_where(args.where)
    if args.counts:
        result = _run_counts(args, candidates, id_columns, where)
    else:
        data = read_measurements(args.before, args.after, args.column, id_columns, where)
        neurons = (data.ids[id_columns[0]].to_list(), data.ids[id_columns[1]].to_list()) if args.scale_correction \
            else None
        result = identify_measurements(
            data.before, data.after, candidates, n_boot=args.n_boot, seed=args.seed,
            confidence=args.confidence, centered=bool(args.centered), invalid=invalid, labels=data.labels,
            neurons=neurons,
        )
    write_outputs(result, args.figure, args.table)
    return result


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; prints the result and returns the exit status (0 success, 1 bad
    input, 2 bad options)."""
    try:
        result = run(argv, prog)
    except SystemExit as stop:  # --help, or an option error already printed by argparse
        return int(stop.code or 0)
    except MeasurementError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args = build_parser(prog).parse_args(argv)
    print(result.summary())
    print(f"figure: {args.figure}" + (f"; table: {args.table}" if args.table else ""))
    return 0


def _id_columns(args: argparse.Namespace) -> list[str] | None:
    return [c.strip() for c in args.id_columns.split(",") if c.strip()] if args.id_columns else None


def _option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, or None."""
    if args.scale_correction:
        if args.counts:
            return ("--scale-correction does not apply with --counts: the corrected statistic is defined for "
                    "measured values, not for dequantised counts with connections that appear or vanish")
        ids = _id_columns(args)
        if not ids:
            return ("--scale-correction needs the neuron of each synapse: give --id-columns PRE,POST "
                    "(the presynaptic and the postsynaptic id column)")
        if len(ids) != 2:
            return (f"--scale-correction needs exactly two id columns, --id-columns PRE,POST (presynaptic, "
                    f"postsynaptic); got {len(ids)}: {', '.join(ids)}")
        if ids[0] == ids[1]:
            return f"--scale-correction needs two different id columns, got {ids[0]} twice"
    if not args.counts:
        used = [flag for flag, value in (("--dequantise", args.dequantise), ("--n-draws", args.n_draws),
                                         ("--control", args.control)) if value is not None]
        used += ["--calibrate"] if args.calibrate else []
        if used:
            return f"{', '.join(used)} only apply to count data; add --counts"
        return None
    if args.drop_rows or args.drop_candidates:
        return ("--drop-rows and --drop-candidates do not apply with --counts: counts cannot change sign, and "
                "zeros are connections that appeared or vanished, which are reported and not analysed")
    if args.n_draws is not None and args.n_draws < 1:
        return f"--n-draws must be at least 1, got {args.n_draws}"
    if args.calibrate and args.centered is False:
        return "--calibrate scores simulated counts with the centred statistic; it cannot be combined with --uncentred"
    if args.calibrate and args.calibration_reps < 20:
        return f"--calibration-reps must be at least 20 for simulation p-values, got {args.calibration_reps}"
    if args.calibrate:
        try:
            names = {get_potential(c.strip()).name for c in args.candidates.split(",") if c.strip()}
        except ValueError:
            return None  # an unknown candidate is reported by the test itself
        missing = [c for c in CONTRAST if c not in names]
        if missing:
            return f"--calibrate compares {' and '.join(CONTRAST)}; add {', '.join(missing)} to --candidates"
    return None


def _run_counts(args: argparse.Namespace, candidates, id_columns, where):
    """The count test, with the control pair and the calibration when asked for."""
    dequantisation = args.dequantise or "uniform"
    n_draws = args.n_draws or 20
    centered = True if args.centered is None else args.centered
    settings = dict(candidates=candidates, n_boot=args.n_boot, n_draws=n_draws, dequantisation=dequantisation,
                    seed=args.seed, confidence=args.confidence, centered=centered)
    matched = read_counts(args.before, args.after, args.column, id_columns, where)
    result = identify_counts(matched, **settings)
    individual_var = 0.0
    if args.control:
        control = read_counts(*args.control, args.column, id_columns, where)
        result.control = identify_counts(control, **settings)
        try:
            individual_var = individual_variability(control.before, control.after)
        except ValueError as error:
            raise MeasurementError(f"control pair: {error}") from None
        result.individual_var = individual_var
    if args.calibrate:
        calibrate_counts(result, matched, individual_var, args.calibration_reps, args.seed)
    return result
