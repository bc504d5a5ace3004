"""Benchmark (prints, not a test): batched spiking simulation vs a per-time-step Python loop.

Both do the same work: `runs` teacher-student runs of a 100-synapse neuron for `duration` seconds
of simulated time at dt = 0.5 ms, with the same seeds. The reference (`spiking.learn_reference`)
advances traces, teacher spikes and weights one step at a time in Python; the batched
`spiking.learn` draws and filters a whole chunk of steps at once for all runs and loops only over
weight-update blocks. With update_every=1 it computes the same numbers as the reference (the
difference is printed); update_every=20 is the chapter's setting (updates summed over 10 ms).

A second comparison times the event-driven simulation of the paper's protocol
(`spiking_protocol.simulate`, sparse spikes, 50-ms blocks) against the dense batched `spiking.learn`
(update_every=100, the same block length) on the same task size, as seconds per trial-second.

Usage: .venv/bin/python benchmarks/bench_spiking.py [--runs 4] [--duration 2.0]
"""

import argparse
import time

import numpy as np

from synaptic_geometry.experiments import spiking
from synaptic_geometry.experiments import spiking_experiments as experiments
from synaptic_geometry.experiments import spiking_protocol as protocol


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--duration", type=float, default=2.0, help="simulated seconds per run")
    args = parser.parse_args()
    rates = experiments.two_group_rates(100, 10.0, 50.0)
    teacher, w0 = spiking.teacher_student(100, rates, seed=0, n_students=args.runs)
    seeds = list(range(args.runs))
    print(f"{args.runs} runs x {args.duration:g} s simulated ({int(args.duration / 5e-4)} steps), 100 synapses")
    for rule, lr in (("euclidean", 1e-5), ("natural_gaussian", 3e-6)):
        t_ref, w_ref = timed(lambda: spiking.learn_reference(rule, rates, teacher, w0, lr, seeds, args.duration))
        common = dict(record_every=args.duration, n_metric_samples=200)
        t_one, res_one = timed(lambda: spiking.learn(rule, rates, teacher, w0, lr, seeds, args.duration,
                                                     update_every=1, metric_every=1, **common))
        t_blk, _ = timed(lambda: spiking.learn(rule, rates, teacher, w0, lr, seeds, args.duration,
                                               update_every=20, metric_every=10, **common))
        diff = np.max(np.abs(res_one["w_final"] - w_ref)) / np.max(np.abs(w_ref - w0))
        print(f"{rule:17s} per-step loop {t_ref:7.2f} s | batched, update_every=1 {t_one:6.2f} s "
              f"(x{t_ref / t_one:5.1f}, max rel. difference {diff:.1e}) | batched, update_every=20 "
              f"{t_blk:6.2f} s (x{t_ref / t_blk:5.1f})")
    print("(includes the one-off stationary input samples, 200 here, that `learn` draws for the KL readout)")
    draws = protocol.trial_draws(100, 10.0, 50.0, args.runs, seed=0)
    rates, w0u, teacheru, X = draws
    for rule, paper_rule in (("euclidean", "euclidean"), ("natural_gaussian", "natural")):
        lr = protocol.package_learning_rate(protocol.TABLE1_RATES[(10.0, 50.0)][paper_rule], paper_rule)
        t_evt, _ = timed(lambda: protocol.simulate(paper_rule, rates, w0u, teacheru, lr, args.duration,
                                                   args.duration / 2, X, seed=0))
        t_dense = 0.0
        for k in range(args.runs):  # dense learn shares one teacher per call
            dt_k, _ = timed(lambda: spiking.learn(rule, rates, teacheru[k], w0u[k:k + 1], lr, [k], args.duration,
                                                  update_every=100, metric_every=20, record_every=args.duration,
                                                  n_metric_samples=200))
            t_dense += dt_k
        per = args.runs * args.duration
        print(f"{rule:17s} event-driven {t_evt / per * 1e3:6.2f} ms per trial-second | dense "
              f"{t_dense / per * 1e3:6.2f} ms (x{t_dense / t_evt:5.1f})")


if __name__ == "__main__":
    main()
