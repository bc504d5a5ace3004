"""Benchmarks for the linear-regression chapter (prints; not a test).

1. The paper-scale figure grid (10 widths 100..20000, N = D^0.5 and D^0.75, q in {2, 1}, three
   potentials, 30 seeds): by default times ``--seeds`` seeds for each q (all widths, exponents and
   potentials) and extrapolates linearly to 30 seeds, saying so; ``--seeds 30`` times it all.
   Nothing is cached (a fresh temporary store), so the time is a computation time.
2. At D = 6161, N = floor(D^0.75): the exact solver against the published iterative protocol
   (16 learning rates x 100 steps on a held-out draw, then the final run), time and residual.

Run:  .venv/bin/python benchmarks/bench_linreg.py [--seeds 1] [--workers 2] [--skip-grid] [--skip-protocol]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


from synaptic_geometry.experiments import linreg


def bench_grid(seeds: int, workers: int) -> None:
    widths = linreg.paper_widths()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        table = linreg.figure_grid(widths, seeds=range(seeds), root=root, progress=False, workers=workers)
        elapsed = time.perf_counter() - start
    per_seed = elapsed / seeds
    print(f"figure grid ({workers} worker process(es)): {seeds} seed(s) x 2 q x 2 exponents x 10 widths x 3 potentials "
          f"= {len(table)} exact solves in {elapsed:.1f} s")
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
    print(f"{'potential':>18} {'exact s':>9} {'exact residual':>15} {'iterative s':>12} "
          f"{'iterative residual':>19} {'speed-up':>9} {'lr':>9} {'steps':>6} failures")
    for name in potentials:
        start = time.perf_counter()
        exact = linreg.bregman_projection(X, y, w0, name)
        t_exact = time.perf_counter() - start
        start = time.perf_counter()
        proto = linreg.published_protocol(X, y, w0, name, (Xh, yh, wh))
        t_proto = time.perf_counter() - start
        print(f"{name:>18} {t_exact:9.2f} {exact.residual:15.2e} {t_proto:12.2f} {proto.residual:19.2e} "
              f"{t_proto / t_exact:8.0f}x {proto.lr:9.2g} {proto.steps:6d} {len(proto.failures)}")
        for failure in proto.failures:
            print(f"{'':>20}- {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per q to time (30 = the whole grid)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the grid (as the paper profile)")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-protocol", action="store_true")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.skip_protocol:
        bench_protocol(["negative_entropy", "2-norm", "3-norm"])
    if not args.skip_grid:
        bench_grid(args.seeds, args.workers)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
