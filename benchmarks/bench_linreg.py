"""Benchmarks for the linear-regression chapter (prints; not a test).

1. The paper-scale figure grid (10 widths 100..20000, N = D^0.5 and D^0.75, q in {2, 1}, three
   potentials, 30 seeds): by default times ``--seeds`` seeds for each q (all widths, exponents and
   potentials) and extrapolates linearly to 30 seeds, saying so; ``--seeds 30`` times it all.
   Nothing is cached (a fresh temporary store), so the time is a computation time.
2. At D = 6161, N = floor(D^0.75): the exact solver against the published iterative protocol
   (16 learning rates x 100 steps on a held-out draw, then the final run), time and residual.
3. One seed of the chapter's failure experiments at the paper profile's widths (400..3200), with
   the leave-one-coordinate-out solves of the assumption checks (16 per run), per condition.

Every time is also printed as a multiple of a reference measured at the start of the same run
(a Cholesky solve of the 2-norm's N x N system X X^T a = y at D = 6161, N = floor(D^0.75)), so
runs on a loaded or a different machine can be compared by their ratios.

Run:  .venv/bin/python benchmarks/bench_linreg.py [--seeds 1] [--workers 2] [--skip-grid] [--skip-protocol]
      [--skip-failures]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import scipy.linalg

from synaptic_geometry.experiments import linreg

REFERENCE = {"seconds": float("nan")}


def reference_seconds(repeats: int = 5) -> float:
    """Best of ``repeats`` Cholesky solves of X X^T a = y at D = 6161, N = floor(D^0.75) (CPU time)."""
    width = 6161
    (_, _, X, y, _), = linreg.nested_draws([width], [0.75], 1.0, 2.0, seed=0)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        scipy.linalg.cho_solve(scipy.linalg.cho_factor(X @ X.T), y)
        best = min(best, time.process_time() - start)
    return best


def times_reference(seconds: float) -> str:
    """``seconds`` as a multiple of the reference solve of this run."""
    return f"{seconds / REFERENCE['seconds']:,.0f}x ref"


def bench_grid(seeds: int, workers: int) -> None:
    widths = linreg.paper_widths()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        table = linreg.figure_grid(widths, seeds=range(seeds), root=root, progress=False, workers=workers)
        elapsed = time.perf_counter() - start
    per_seed = elapsed / seeds
    print(f"figure grid ({workers} worker process(es)): {seeds} seed(s) x 2 q x 2 exponents x 10 widths x 3 potentials "
          f"= {len(table)} exact solves in {elapsed:.1f} s wall ({times_reference(elapsed)})")
    print(f"  max relative residual {table.residual.max():.2e}, max Newton iterations {int(table.iterations.max())}")
    if seeds < 30:
        print(f"  extrapolated to 30 seeds (linear in seeds): {30 * per_seed / 60:.1f} min (target <= 15 min)")
    else:
        print(f"  full grid: {elapsed / 60:.1f} min (target <= 15 min)")


def bench_protocol(potentials: list[str]) -> None:
    width, exponent, q = 6161, 0.75, 2.0
    (_, _, X, y, w0), = linreg.nested_draws([width], [exponent], 1.0, q, seed=0)
    (_, _, Xh, yh, wh), = linreg.nested_draws([width], [exponent], 1.0, q, seed=10_000)
    print(f"D = {width}, N = {X.shape[0]} (q = {q:g}): exact solver vs published iterative protocol")
    print(f"{'potential':>18} {'exact CPU s':>9} {'exact residual':>15} {'iterative CPU s':>12} "
          f"{'iterative residual':>19} {'speed-up':>9} {'lr':>9} {'steps':>6} failures")
    for name in potentials:
        start = time.process_time()
        exact = linreg.bregman_projection(X, y, w0, name)
        t_exact = time.process_time() - start
        start = time.process_time()
        proto = linreg.published_protocol(X, y, w0, name, (Xh, yh, wh))
        t_proto = time.process_time() - start
        print(f"{name:>18} {t_exact:9.2f} {exact.residual:15.2e} {t_proto:12.2f} {proto.residual:19.2e} "
              f"{t_proto / t_exact:8.0f}x {proto.lr:9.2g} {proto.steps:6d} {len(proto.failures)}"
              f"   exact {times_reference(t_exact)}")
        for failure in proto.failures:
            print(f"{'':>20}- {failure}")


FAILURE_CONDITIONS = {
    "checks, q = 2 (16 leave-one-out solves)": dict(exponent=0.75, cavity_samples=16),
    "N = D/4": dict(ratio=0.25),
    "N = D^0.5": dict(exponent=0.5),
    "labels x200": dict(exponent=0.75, label_scale=200.0),
}


def bench_failures(widths: list[int]) -> None:
    """CPU time of one seed of each failure condition (three potentials), nothing cached."""
    print(f"failure experiments, one seed, widths {widths}, three potentials (CPU s; x30 for the paper's seeds)")
    for name, kwargs in FAILURE_CONDITIONS.items():
        with tempfile.TemporaryDirectory() as root:
            start = time.process_time()
            frame = linreg.failure_sweep(widths, seeds=[0], root=root, **kwargs)
            elapsed = time.process_time() - start
        print(f"  {name:>40}: {elapsed:7.2f} s ({times_reference(elapsed)}), "
              f"{int(frame.delta_cdf.isna().sum())} failed solves")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per q to time (30 = the whole grid)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the grid (as the paper profile)")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-protocol", action="store_true")
    parser.add_argument("--skip-failures", action="store_true")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    REFERENCE["seconds"] = reference_seconds()
    print(f"reference: Cholesky solve of X X^T a = y at D = 6161, N = {linreg.n_points(6161, 0.75)}: "
          f"{REFERENCE['seconds'] * 1e3:.1f} ms CPU")
    if not args.skip_protocol:
        bench_protocol(["negative_entropy", "2-norm", "3-norm"])
    if not args.skip_failures:
        bench_failures([400, 800, 1600, 3200])
    if not args.skip_grid:
        bench_grid(args.seeds, args.workers)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
