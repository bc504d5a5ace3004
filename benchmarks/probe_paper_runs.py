"""Run a slice of a chapter's `paper` plan and print what each training reached (prints; not a test).

The `paper` profiles take longer than one sitting, and their cost depends on how often a search
is extended (a run whose chosen rate misses 100% training accuracy repeats the grid with more
epochs). This runs, with the chapter's own plan and functions, only the runs of one network for
the seeds and potentials named, into a store of your choice (reusable by the chapter if it is the
chapter's store), and prints every single-rate training: rate, epochs, final loss, training
accuracy (or, for SimSiam, the share of the loss gap closed) and seconds.

Run:  .venv/bin/python benchmarks/probe_paper_runs.py --arch rnn-1000 --seeds 0 \\
          --potentials negative_entropy,3-norm --root /tmp/probe-store
      .venv/bin/python benchmarks/probe_paper_runs.py --arch simsiam --seeds 0 --potentials 2-norm \\
          --root /tmp/probe-store
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from synaptic_geometry.book.build import load_profile
from synaptic_geometry.experiments import deep_analysis as da
from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import paper_architectures as pa
from synaptic_geometry.experiments import simsiam
from synaptic_geometry.experiments.paper_architectures import SIMSIAM
from synaptic_geometry.infra.store import load_arrays


def slice_runs(arch: str, seeds: list[int], potentials: list[str], profile: str) -> list[dict]:
    """The runs of ``arch`` (a network of the deep chapter, or ``simsiam``) at ``profile`` for these seeds and potentials."""
    if arch == SIMSIAM:
        s = load_profile("paper_architectures", profile)
        pretraining = simsiam.pretrain_params(dataset=s["dataset"], **s["simsiam_pretraining"])
        return pa.simsiam_plan(pretraining, potentials, seeds, s["simsiam_lr_rules"], lr_grid=s["simsiam_lr_grid"],
                               epochs=s["simsiam_epochs"], batch_size=s["simsiam_batch_size"], bracket=True)
    runs, _ = da.profile_runs(load_profile("deep_networks", profile))
    if arch not in {r["arch"] for r in runs}:
        raise SystemExit(f"{arch!r} is not a network of the deep chapter's {profile} profile "
                         f"(known: {', '.join(sorted({r['arch'] for r in runs}))}, or {SIMSIAM})")
    return [r for r in runs if r["arch"] == arch and r["seed"] in seeds and r["potential"] in potentials]


def trainings(root: Path, arch: str, seeds: list[int], potentials: list[str]) -> list[dict]:
    """The stored single-rate trainings of ``arch`` for these seeds and potentials."""
    name = "simsiam_finetune_rate" if arch == SIMSIAM else "finetune_unit"
    rows = []
    for meta in sorted((root / name).glob("*.json")):
        record = json.loads(meta.read_text())
        params = record["params"]["params"]
        if (arch != SIMSIAM and params["arch"] != arch) or params["seed"] not in seeds \
                or params["potential"] not in potentials:
            continue
        arrays = load_arrays(meta.with_suffix(".npz"))
        rows.append({"potential": params["potential"], "seed": params["seed"], "lr": params["lr"],
                     "epochs": params["epochs"], "loss": float(arrays["loss"]),
                     "reached": float(arrays["gap_closed" if arch == SIMSIAM else "accuracy"]),
                     "seconds": record["elapsed_seconds"]})
    return sorted(rows, key=lambda row: (row["potential"], row["seed"], row["epochs"], row["lr"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, help=f"a network of the deep chapter, or {SIMSIAM}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--potentials", default="2-norm,negative_entropy,3-norm", help="comma-separated potentials")
    parser.add_argument("--profile", default="paper", choices=["tiny", "default", "paper"])
    parser.add_argument("--root", type=Path, required=True, help="result store to use")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    seeds, potentials = [int(s) for s in args.seeds.split(",")], args.potentials.split(",")
    runs = slice_runs(args.arch, seeds, potentials, args.profile)
    if not runs:
        raise SystemExit("no run of the plan matches these seeds and potentials")
    options = dict(root=args.root, executor="local", workers=args.workers, threads=1, progress=True)
    start = time.time()
    sweeps = pa.run_simsiam(runs, **options) if args.arch == SIMSIAM else ft.run_all(runs, **options)
    for sweep in sweeps:
        print(sweep.summary())
    print(f"{len(runs)} runs in {time.time() - start:.0f} s of wall time\n")
    reached = "gap closed" if args.arch == SIMSIAM else "training accuracy"
    print(f"{'potential':>17} {'seed':>4} {'rate':>8} {'epochs':>6} {'loss':>10} {reached:>17} {'seconds':>8}")
    for row in trainings(args.root, args.arch, seeds, potentials):
        print(f"{row['potential']:>17} {row['seed']:>4} {row['lr']:>8g} {row['epochs']:>6} {row['loss']:>10.4g} "
              f"{row['reached']:>17.4f} {row['seconds']:>8.0f}")


if __name__ == "__main__":
    main()
