"""Benchmark: one MirrorDescent step against torch.optim.SGD(momentum=0.9, foreach=True).

About 10M float32 parameters in 20 tensors of convolution-like shapes, random gradients, momentum
0.9 for every optimizer. Steps are timed after warm-up rounds; in each round every candidate is
timed right after an SGD step on the reference parameters, so that load from other processes hits
both alike; the medians over rounds give the ratio. Two clocks: wall time, and the process's CPU time (steadier on
a shared machine, where wall time also counts time spent waiting for a core).

Also timed: the single-tensor path, and steps with the non-finite checks switched off, whose
difference to the normal step is the cost of those checks.

Run:  python benchmarks/bench_optim.py [--repeats 15] [--threads N]
Targets: <= 1.1x SGD for the 2-norm, <= 2x for negative entropy and p-norms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

from synaptic_geometry import optim
from synaptic_geometry.optim import MirrorDescent

SHAPES = [
    (64, 3, 7, 7),
    (64, 64, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3),
    (128, 64, 3, 3), (128, 128, 3, 3), (128, 128, 3, 3), (128, 128, 3, 3),
    (256, 128, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3),
    (512, 256, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
    (1000, 512), (512,), (1000,),
]

CANDIDATES = [  # (label, potential, foreach, checks on, target)
    ("2-norm", "2-norm", True, True, 1.1),
    ("negative_entropy", "negative_entropy", True, True, 2.0),
    ("3-norm", "3-norm", True, True, 2.0),
    ("1.5-norm", "1.5-norm", True, True, 2.0),
    ("hypentropy:0.1", "hypentropy:0.1", True, True, None),
    ("2.5-norm (general power)", "2.5-norm", True, True, None),
    ("2-norm, single-tensor path", "2-norm", False, True, None),
    ("negative_entropy, single-tensor", "negative_entropy", False, True, None),
    ("2-norm, checks off", "2-norm", True, False, None),
    ("negative_entropy, checks off", "negative_entropy", True, False, None),
]


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
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    reference = make_params(0)
    n = sum(p.numel() for p in reference)
    print(f"{n / 1e6:.2f}M float32 parameters in {len(reference)} tensors; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); median of {args.repeats} rounds after {args.warmup} warm-up rounds")
    sgd = torch.optim.SGD(reference, lr=1e-3, momentum=0.9, foreach=True)

    optimizers = []
    for label, potential, foreach, checks, target in CANDIDATES:
        opt = MirrorDescent(make_params(0), lr=1e-3, momentum=0.9, potential=potential, foreach=foreach)
        optimizers.append((opt, checks))

    def run(opt, checks):
        if checks:
            return timed(opt.step)
        with mock.patch.object(optim, "_check_finite", lambda *a: None):
            return timed(opt.step)

    # round robin: every round times each candidate right after an SGD step, so that bursts of
    # load from other processes spread over all candidates instead of hitting one
    ref = [[] for _ in CANDIDATES]
    ours = [[] for _ in CANDIDATES]
    for round_ in range(args.warmup + args.repeats):
        for k, (opt, checks) in enumerate(optimizers):
            t_ref, t_ours = timed(sgd.step), run(opt, checks)
            if round_ >= args.warmup:
                ref[k].append(t_ref)
                ours[k].append(t_ours)

    def med(xs, clock):
        return statistics.median(x[clock] for x in xs)

    rows = [
        (label, med(ours[k], 0), med(ref[k], 0), med(ours[k], 1), med(ref[k], 1), target)
        for k, (label, _, _, _, target) in enumerate(CANDIDATES)
    ]

    print(f"\n{'':32s} {'--------- wall time ---------':>29s}  {'---------- CPU time ---------':>29s}")
    print(f"{'candidate':32s} {'ms':>8s} {'SGD ms':>8s} {'ratio':>6s} {'ok':>4s}  {'ms':>8s} {'SGD ms':>8s} {'ratio':>6s} {'ok':>4s}  target")
    for label, wall, wall_ref, cpu, cpu_ref, target in rows:
        def verdict(ratio):
            return "" if target is None else ("yes" if ratio <= target else "NO")
        target_text = "" if target is None else f"<= {target:g}x"
        print(f"{label:32s} {wall * 1e3:8.2f} {wall_ref * 1e3:8.2f} {wall / wall_ref:6.2f} {verdict(wall / wall_ref):>4s}  "
              f"{cpu * 1e3:8.2f} {cpu_ref * 1e3:8.2f} {cpu / cpu_ref:6.2f} {verdict(cpu / cpu_ref):>4s}  {target_text}")
    by_label = {r[0]: r for r in rows}
    for name in ("2-norm", "negative_entropy"):
        on, off = by_label[name], by_label[f"{name}, checks off"]
        print(f"cost of the non-finite checks in a {name} step: {(on[3] - off[3]) / on[4]:+.2f} x SGD (CPU time), "
              f"{(on[1] - off[1]) / on[2]:+.2f} x SGD (wall time)")
    print("\nThe machine may be shared: ratios vary from run to run (rerun before drawing conclusions).")


if __name__ == "__main__":
    main()
