"""The ``synaptic-geometry identify BEFORE.csv AFTER.csv`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from synaptic_geometry.identify.errors import MeasurementError
from synaptic_geometry.identify.outputs import FIGURE_SUFFIXES, TABLE_SUFFIXES, check_output, write_outputs
from synaptic_geometry.identify.reading import read_measurements
from synaptic_geometry.identify.statistics import identify_measurements
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS

__all__ = ["build_parser", "main"]

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


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the exit status (0 success, 1 bad input, 2 bad options)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or an option error already printed by argparse
        return int(stop.code or 0)
    invalid = "drop_rows" if args.drop_rows else "drop_candidates" if args.drop_candidates else "error"
    try:
        check_output(args.figure, FIGURE_SUFFIXES, "figure")
        check_output(args.table, TABLE_SUFFIXES, "table")
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

