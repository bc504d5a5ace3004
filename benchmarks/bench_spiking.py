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

A third comparison times the fast block work of `simulate` (one trace state per input stream,
sparse spike matrices for all configurations, float64 and float32) against its plain reference
(`reference=True`, every trial of every configuration on its own, the pre-vectorisation path) on
the chapter's 10/50-Hz job (15 configurations) and a three-rule job, as CPU ms per
configuration-trial-second, with the ratio to the reference measured in the same run.

``--paper-fraction SECONDS`` instead runs one chunk of each kind of the `paper` profile's jobs
(125 trials) for SECONDS of simulated time, as the build would (float32), and extrapolates the
CPU time of the profile's whole teacher-student set (every chunk, 8000 s).

Usage: .venv/bin/python benchmarks/bench_spiking.py [--runs 4] [--duration 2.0] [--paper-fraction 50]
"""

import argparse
import inspect
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
    parser.add_argument("--paper-fraction", type=float, default=0.0,
                        help="simulated seconds of one chunk of each paper-profile job, then extrapolate")
    args = parser.parse_args()
    if args.paper_fraction > 0:
        paper_fraction(args.paper_fraction)
        return
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

    block_work(max(2, args.runs), max(args.duration, 5.0))


def _job_cost(job: dict, duration: float, **options) -> float:
    """CPU seconds of ``job`` (a teacher_student_run job dict) simulated for ``duration`` s."""
    rates, w0, teacher, X = protocol.trial_draws(100, job["low"], job["high"], job["n_trials"], job["seed"],
                                                 first_trial=job["first_trial"])
    J, T = len(job["rules"]), job["n_trials"]
    lr = np.repeat([protocol.package_learning_rate(e, r) for r, e in zip(job["rules"], job["etas"])], T)
    block = inspect.signature(protocol.teacher_student_run.compute).parameters["block"].default  # the build's
    start = time.process_time()
    protocol.simulate(np.repeat(np.array(job["rules"], dtype=object), T), rates, np.tile(w0, (J, 1)),
                      np.tile(teacher, (J, 1)), lr, duration, duration, np.tile(X, (J, 1, 1)), [0, 0],
                      streams=T, block=block, metric_every=protocol._blocks_per_second(block), **options)
    return time.process_time() - start


def block_work(trials: int, duration: float) -> None:
    jobs = experiments.paper_protocol_jobs(trials, duration, duration, [0.5, 0.71, 1.41, 2.0, 2.83, 4.0],
                                           trials, 0)
    for name, job in (("10/50 Hz, 15 configurations", jobs["speed"][0]), ("three rules", jobs["approx"][0])):
        per = len(job["rules"]) * job["n_trials"] * duration / 1e3
        ref = _job_cost(job, duration, reference=True) / per
        f64 = _job_cost(job, duration) / per
        f32 = _job_cost(job, duration, dtype=np.float32) / per
        print(f"{name:29s} reference {ref:6.3f} ms per config-trial-second | fast float64 {f64:6.3f} "
              f"(x{ref / f64:4.2f}) | fast float32 {f32:6.3f} (x{ref / f32:4.2f})")


def paper_fraction(seconds: float) -> None:
    """Time one 125-trial chunk of each job kind of the paper profile and extrapolate."""
    import yaml
    from importlib import resources

    prof = yaml.safe_load(resources.files("synaptic_geometry.book").joinpath("profiles/spiking.yml").read_text())["paper"]
    jobs = experiments.paper_protocol_jobs(prof["n_trials"], prof["duration"], prof["eval_every"], prof["lr_factors"],
                                           prof["approx_trials"], 0, prof["chunk_trials"])
    total = 0.0
    for name in ("speed", "approx"):
        group = jobs[name]
        cost = _job_cost(group[0], seconds, dtype=np.float32)
        per_chunk = cost * prof["duration"] / seconds
        total += per_chunk * len(group)
        print(f"{name}: one chunk ({len(group[0]['rules'])} configurations x {group[0]['n_trials']} trials) "
              f"{cost:.1f} CPU-s for {seconds:g} s -> {per_chunk / 3600:.2f} CPU-h per chunk of "
              f"{prof['duration']:g} s, {len(group)} chunks", flush=True)
    print(f"paper profile, teacher-student jobs: {total / 3600:.2f} CPU-h, {total / 7200:.2f} h of wall on 2 cores")


if __name__ == "__main__":
    main()
