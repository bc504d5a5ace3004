"""Benchmark: exact Delta-CDF against a plain numpy sort of the same array (not a test).

Run: python benchmarks/bench_gaussianity.py [--size 10000000] [--repeats 5]

Prints the time of ``delta_cdf`` over 10M values as a ratio to ``np.sort`` of the same array,
measured in the same run (median of a few interleaved repeats); the target is <= 3x. Also times
``delta_cdf_grid`` (the published 1000-point grid, evaluated here with a binary search) and,
clearly labelled, the published method itself, which compares every value with every grid point
(O(1000 n)); that one is timed on a smaller sample and extrapolated linearly to the full size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

from synaptic_geometry.gaussianity import delta_cdf, delta_cdf_grid

TARGET = 3.0


def seconds(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def published_method(change: np.ndarray, chunk: int = 200) -> float:
    """Reference only: the published computation, every value against every grid point.

    Uncentred, divided by the standard deviation (np.std here; the published code used torch's,
    which divides by n - 1), ECDF = fraction of values strictly below each of
    1000 grid points on [-5, 5] (computed 200 grid points at a time, as published), then
    ``sum |ECDF - Phi| * dx``.
    """
    z = change / change.std()
    grid = np.linspace(-5, 5, 1000)
    ecdf = np.empty_like(grid)
    for start in range(0, grid.size, chunk):
        ecdf[start : start + chunk] = (grid[start : start + chunk, None] > z[None, :]).mean(axis=-1)
    return float(np.abs(ecdf - ndtr(grid)).sum() * (grid[1] - grid[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="number of values (default 10M)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians are reported")
    parser.add_argument("--published-size", type=int, default=100_000, help="sample size for the O(1000 n) method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal(args.size)
    print(f"{args.size:,} standard-normal values (seed {args.seed}), float64; {args.repeats} repeats, medians")

    delta_cdf(x[:1000])  # import-time and first-call effects out of the way
    sort_times, exact_times = [], []
    for _ in range(args.repeats):
        sort_times.append(seconds(lambda: np.sort(x)))  # np.sort returns a sorted copy
        exact_times.append(seconds(lambda: delta_cdf(x)))
    t_sort, t_exact = statistics.median(sort_times), statistics.median(exact_times)
    ratio = t_exact / t_sort
    print(f"np.sort(x)            {t_sort:8.3f} s")
    print(f"delta_cdf(x) (exact)  {t_exact:8.3f} s   ratio to sort {ratio:5.2f}x   "
          f"target <= {TARGET:.0f}x: {'met' if ratio <= TARGET else 'NOT met'}")

    t_grid = statistics.median(seconds(lambda: delta_cdf_grid(x)) for _ in range(max(1, args.repeats // 2)))
    print(f"delta_cdf_grid(x)     {t_grid:8.3f} s   ratio to sort {t_grid / t_sort:5.2f}x   "
          "(published 1000-point grid via binary search)")

    exact, grid = delta_cdf(x), delta_cdf_grid(x)
    print(f"values: exact {exact:.6g}, grid {grid:.6g} (relative difference {(grid - exact) / exact:+.2%})")

    m = min(args.published_size, args.size)
    small = x[:m]
    t_pub = min(seconds(lambda: published_method(small)) for _ in range(2))
    t_pub_full = t_pub * args.size / m
    print(f"PUBLISHED METHOD (reference, O(1000 n), all values vs every grid point) on {m:,} values: "
          f"{t_pub:.3f} s; extrapolated linearly to {args.size:,}: {t_pub_full:.0f} s "
          f"= {t_pub_full / t_sort:.0f}x sort, {t_pub_full / t_exact:.0f}x delta_cdf")
    print(f"check: published method and delta_cdf_grid agree on {m:,} values: "
          f"{published_method(small):.12g} vs {delta_cdf_grid(small):.12g}")


if __name__ == "__main__":
    main()
