"""Benchmark: one MirrorDescent step against torch's fused and foreach SGD, in the same run.

About 11.5M float32 parameters in 20 tensors of convolution-like shapes (a ResNet-18-sized
model), random gradients, momentum 0.9 for every optimizer, non-finite checks on (they are part of
every MirrorDescent step). All optimizers update the same parameters (each keeps its own momentum
buffers). Every round times, for each candidate, a ``torch.optim.SGD(fused=True)`` step, the
candidate's step and a ``torch.optim.SGD(foreach=True)`` step back to back (the order of the two
references alternates between rounds), so load from other processes hits a candidate and its
references alike; the ratios are per round, and the table gives their median and interquartile
range over the rounds. Wall time is what counts; the process's CPU time is shown beside it (on a
shared machine wall time also counts time spent waiting for a core). The load average before and
after the run says whether other processes were busy.

Also reported, separately: the time to build the fused kernel from scratch (in a subprocess, with
an empty extension directory: what a fresh clone pays once), the time to load it when built, and
each candidate's first step.

Run:  python benchmarks/bench_optim.py [--repeats 30] [--threads 2] [--no-cold-build]
      [--potentials 2-norm negative_entropy ...] [--paths fused foreach]
Targets (fused path, 2 threads, quiet machine): <= 1.0x fused SGD for the 2-norm,
<= 1.3x for negative entropy and the 3-norm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from synaptic_geometry.optim import MirrorDescent, fused_available

SHAPES = [
    (64, 3, 7, 7),
    (64, 64, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3),
    (128, 64, 3, 3), (128, 128, 3, 3), (128, 128, 3, 3), (128, 128, 3, 3),
    (256, 128, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3),
    (512, 256, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
    (1000, 512), (512,), (1000,),
]
POTENTIALS = ["2-norm", "negative_entropy", "3-norm", "hypentropy:0.1", "2.5-norm"]
TARGETS = {"2-norm": 1.0, "negative_entropy": 1.3, "3-norm": 1.3}  # fused path / fused SGD
PATHS = {"fused": dict(fused=True), "foreach": dict(fused=False, foreach=True)}
COLD_BUILD = (
    "import time; from synaptic_geometry import optim; t = time.perf_counter(); "
    "ok = optim.fused_available(); print(ok, time.perf_counter() - t)"
)


def make_params(seed: int) -> list[torch.Tensor]:
    """Log-normal magnitudes with random signs (valid for every potential) and random gradients."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in SHAPES:
        magnitude = torch.exp(torch.randn(shape, generator=gen) - 3.0)
        sign = torch.randint(0, 2, shape, generator=gen) * 2.0 - 1.0
        p = (magnitude * sign).requires_grad_()
        p.grad = torch.randn(shape, generator=gen) * 1e-2
        params.append(p)
    return params


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def cold_build_seconds() -> tuple[bool, float]:
    """Build the fused kernel from scratch in a subprocess (empty extension directory)."""
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, TORCH_EXTENSIONS_DIR=directory)
        out = subprocess.run([sys.executable, "-c", COLD_BUILD], env=env, capture_output=True, text=True, check=True)
    ok, seconds = out.stdout.split()
    return ok == "True", float(seconds)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(xs, n=4)
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--no-cold-build", action="store_true", help="skip timing a from-scratch build")
    parser.add_argument("--potentials", nargs="+", default=POTENTIALS, metavar="NAME",
                        help=f"potentials to time (default: {' '.join(POTENTIALS)})")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                        help="MirrorDescent paths to time (default: fused foreach)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    if not args.no_cold_build:
        ok, seconds = cold_build_seconds()
        print(f"fused kernel, build from scratch (fresh clone, once per machine): {seconds:.1f} s"
              + ("" if ok else " -- FAILED (the fused path is unavailable)"))
    start = time.perf_counter()
    if not fused_available():
        sys.exit("the fused kernel could not be built; see the warning above")
    print(f"fused kernel, load in this process (built or cached): {time.perf_counter() - start:.1f} s")

    params = make_params(0)
    n = sum(p.numel() for p in params)
    print(f"{n / 1e6:.2f}M float32 parameters in {len(params)} tensors; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.repeats} rounds after {args.warmup} warm-up rounds")
    sgd_fused = torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=True)
    sgd_foreach = torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    candidates = [(potential, name) for potential in args.potentials for name in args.paths]
    optimizers, first_steps = [], []
    for potential, name in candidates:
        opt = MirrorDescent(params, lr=1e-3, momentum=0.9, potential=potential, **PATHS[name])
        first_steps.append(timed(opt.step)[0])  # allocates the momentum buffers
        optimizers.append(opt.step)
    sgd_fused.step()
    sgd_foreach.step()

    wall = {k: [] for k in range(len(candidates))}  # per round: (candidate, fused SGD, foreach SGD)
    cpu = {k: [] for k in range(len(candidates))}
    for round_ in range(args.warmup + args.repeats):
        for k, step in enumerate(optimizers):
            if round_ % 2:
                t_foreach, t_ours, t_fused = timed(sgd_foreach.step), timed(step), timed(sgd_fused.step)
            else:
                t_fused, t_ours, t_foreach = timed(sgd_fused.step), timed(step), timed(sgd_foreach.step)
            if round_ >= args.warmup:
                wall[k].append((t_ours[0], t_fused[0], t_foreach[0]))
                cpu[k].append((t_ours[1], t_fused[1], t_foreach[1]))
    load_after = os.getloadavg()

    all_fused = [r[1] for rows in wall.values() for r in rows]
    all_foreach = [r[2] for rows in wall.values() for r in rows]
    print(f"references: fused SGD {statistics.median(all_fused) * 1e3:.2f} ms, foreach SGD "
          f"{statistics.median(all_foreach) * 1e3:.2f} ms per step (medians over all rounds)\n")
    header = (f"{'potential':18s} {'path':8s} {'ms':>7s} {'first':>7s}   {'/ fused SGD [q25, q75]':>24s} "
              f"{'/ foreach SGD [q25, q75]':>25s}   {'CPU / fused':>11s}  target")
    print(header)
    print("-" * len(header))
    for k, (potential, name) in enumerate(candidates):
        ours = statistics.median(r[0] for r in wall[k])
        vs_fused = quartiles([r[0] / r[1] for r in wall[k]])
        vs_foreach = quartiles([r[0] / r[2] for r in wall[k]])
        cpu_fused = statistics.median(r[0] / r[1] for r in cpu[k] if r[1] > 0)
        target = TARGETS.get(potential) if name == "fused" else None
        verdict = "" if target is None else f"<= {target:g}x " + ("yes" if vs_fused[1] <= target else "NO")
        print(f"{potential:18s} {name:8s} {ours * 1e3:7.2f} {first_steps[k] * 1e3:7.1f}   "
              f"{vs_fused[1]:6.2f} [{vs_fused[0]:5.2f}, {vs_fused[2]:5.2f}]       "
              f"{vs_foreach[1]:6.2f} [{vs_foreach[0]:5.2f}, {vs_foreach[2]:5.2f}]   {cpu_fused:11.2f}  {verdict}")
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores: "
          "above about 0.5, other processes were running and the ratios are noisier (rerun on a quiet machine).")


if __name__ == "__main__":
    main()
