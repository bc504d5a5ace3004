"""What the `paper` profiles of the deep-network and paper-architecture chapters cost (prints; not a test).

For every network of the two chapters' `paper` profiles it times training steps (forward,
backward and a ``MirrorDescent`` step with the 3-norm, momentum 0.9; the optimizer is a small part of a step) on random digits at
the profile's batch sizes, on one thread, and turns the median step into CPU-seconds per image.
From the profile's own parameters it then prints what one job costs (a pretraining; one
finetuning at one rate for the profile's epochs) and bounds for the whole chapter:

* lower bound: every search trains each rate it must try once, at the first number of epochs,
  with no extension (the deep chapter's published rule tries every rate of the grid; the
  bracketed searches of the paper-architecture chapter try at least three);
* worst case: every search tries every rate and is extended the profile's maximum number of
  times (30, 60, ... epochs; each extension repeats the grid).

The small-change rule's trainings are the published rule's in the deep chapter (shared units),
and stop at 100% training accuracy in the other, so they enter only the worst case. Evaluation
passes and the scoring are left out (a few per cent at the default profile). Two cores run two
such jobs at once, so the wall time on a 2-core machine is about half the CPU time.

Run:  .venv/bin/python benchmarks/bench_paper_scale.py [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

from synaptic_geometry.experiments import deep_analysis as da
from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import models, simsiam
from synaptic_geometry.optim import MirrorDescent

PROFILES = Path(__file__).resolve().parents[1] / "src" / "synaptic_geometry" / "book" / "profiles"
PRETRAIN_IMAGES = 4000  # the pretraining part of the embedded MNIST split


def seconds_per_image(step, batch: int, steps: int) -> float:
    """Median CPU-seconds of ``step(batch)`` divided by the batch (first call is a warm-up)."""
    step(batch)
    times = []
    for _ in range(steps):
        start = time.process_time()
        step(batch)
        times.append(time.process_time() - start)
    return statistics.median(times) / batch


def supervised_step(net: torch.nn.Module):
    optimizer = MirrorDescent(net.parameters(), potential="3-norm", lr=1e-4, momentum=0.9)

    def step(batch: int) -> None:
        x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return step


def simsiam_step(net: simsiam.SimSiam):
    optimizer = MirrorDescent(net.parameters(), potential="3-norm", lr=1e-4, momentum=0.9)

    def step(batch: int) -> None:
        x1, x2 = torch.rand(batch, 1, 28, 28), torch.rand(batch, 1, 28, 28)
        optimizer.zero_grad(set_to_none=True)
        simsiam.simsiam_loss(*net(x1, x2)).backward()
        optimizer.step()
    return step


def hours(seconds: float) -> str:
    return f"{seconds / 3600:8.1f}"


def extension_epochs(epochs: int, extra: int, extensions: int) -> int:
    """Epochs trained per rate when a search runs at epochs, epochs + extra, ... (extensions more times)."""
    return sum(epochs + k * extra for k in range(extensions + 1))


def deep_networks(steps: int) -> tuple[float, float]:
    paper = yaml.safe_load((PROFILES / "deep_networks.yml").read_text())["paper"]
    main, widths = da.profile_runs(paper)
    grid, epochs = len(paper["lr_grid"]), paper["epochs"]
    worst_epochs = extension_epochs(epochs, paper["extra_epochs"], paper["max_extensions"])
    low = high = 0.0
    print(f"deep_networks (paper): grid of {grid} rates, {epochs} epochs, batch {paper['batch_size']}, "
          f"up to {paper['max_extensions']} extensions of {paper['extra_epochs']}")
    print(f"{'network':<12}{'D':>10}{'N':>6}{'ms/image':>10}{'pretrain s':>12}{'unit s':>9}"
          f"{'units':>7}{'low CPU-h':>10}{'worst CPU-h':>12}")
    for arch in dict.fromkeys(r["arch"] for r in main + widths):
        runs = [r for r in main + widths if r["arch"] == arch]
        net = models.build(arch)
        dim = models.n_analysed(net)
        n = ft.finetuning_count(runs[0]["n_samples"], dim)
        pre = runs[0]["pretraining"]
        finetune_cost = seconds_per_image(supervised_step(net), min(paper["batch_size"], n), steps)
        pretrain_cost = seconds_per_image(supervised_step(models.build(arch)), pre["batch_size"], steps)
        pretrain = pretrain_cost * PRETRAIN_IMAGES * pre["epochs"]
        unit = finetune_cost * n * epochs
        searches = len({(r["potential"], r["seed"]) for r in runs})  # the protocols share their units
        arch_low = pretrain + searches * grid * unit
        arch_high = pretrain + searches * grid * finetune_cost * n * worst_epochs
        low, high = low + arch_low, high + arch_high
        print(f"{arch:<12}{dim:>10}{n:>6}{1000 * finetune_cost:>10.2f}{pretrain:>12.0f}{unit:>9.1f}"
              f"{searches * grid:>7}{hours(arch_low):>10}{hours(arch_high):>12}")
    print(f"{'total':<12}{'':>54}{hours(low):>10}{hours(high):>12}\n")
    return low, high


def paper_architectures(steps: int) -> tuple[float, float]:
    paper = yaml.safe_load((PROFILES / "paper_architectures.yml").read_text())["paper"]
    grid, epochs, seeds, potentials = len(paper["lr_grid"]), paper["epochs"], len(paper["seeds"]), len(paper["potentials"])
    worst = extension_epochs(epochs, paper["extra_epochs"], paper["max_extensions"])
    worst_small = extension_epochs(paper["small_change_epochs"], paper["extra_epochs"], paper["max_extensions"])
    searches = seeds * potentials
    low = high = 0.0
    print(f"paper_architectures (paper): grid of {grid} rates, {epochs} epochs (small-change cap "
          f"{paper['small_change_epochs']}), batch {paper['batch_size']}, {searches} searches per network")
    print(f"{'network':<24}{'D':>9}{'N':>6}{'ms/image':>10}{'pretrain s':>12}{'unit s':>9}"
          f"{'low CPU-h':>10}{'worst CPU-h':>12}")
    for arch in paper["architectures"]:
        settings = paper["pretraining"][arch]
        pre = ft.pretrain_params(arch, paper["dataset"], **settings)
        net = models.build(arch)
        dim = models.n_analysed(net)
        n = ft.finetuning_count(None, dim)
        finetune_cost = seconds_per_image(supervised_step(net), min(paper["batch_size"], n), steps)
        pretrain_cost = seconds_per_image(supervised_step(models.build(arch)), pre["batch_size"], steps)
        pretrain = pretrain_cost * PRETRAIN_IMAGES * pre["epochs"]  # the cap; a loss plateau may stop it earlier
        unit = finetune_cost * n * epochs
        arch_low = pretrain + searches * 3 * unit
        arch_high = pretrain + searches * grid * finetune_cost * n * (worst + worst_small)
        low, high = low + arch_low, high + arch_high
        print(f"{arch:<24}{dim:>9}{n:>6}{1000 * finetune_cost:>10.2f}{pretrain:>12.0f}{unit:>9.1f}"
              f"{hours(arch_low):>10}{hours(arch_high):>12}")
    ssl = paper["simsiam_pretraining"]
    net = simsiam.build(ssl["backbone"], width=ssl["width"])
    dim = simsiam.n_analysed(net)
    n = ft.finetuning_count(None, dim)
    finetune_cost = seconds_per_image(simsiam_step(net), min(paper["simsiam_batch_size"], n), steps)
    pretrain_cost = seconds_per_image(simsiam_step(simsiam.build(ssl["backbone"], width=ssl["width"])),
                                      ssl["batch_size"], steps)
    pretrain = pretrain_cost * PRETRAIN_IMAGES * ssl["epochs"]
    unit = finetune_cost * n * paper["simsiam_epochs"]
    rules = len(paper["simsiam_lr_rules"])
    ssl_low = pretrain + searches * 2 * unit
    ssl_high = pretrain + searches * rules * len(paper["simsiam_lr_grid"]) * unit
    low, high = low + ssl_low, high + ssl_high
    label = f"simsiam-{ssl['backbone']}-w{ssl['width']}"
    print(f"{label:<24}{dim:>9}{n:>6}{1000 * finetune_cost:>10.2f}{pretrain:>12.0f}{unit:>9.1f}"
          f"{hours(ssl_low):>10}{hours(ssl_high):>12}")
    print(f"{'total':<24}{'':>46}{hours(low):>10}{hours(high):>12}\n")
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per network and batch size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"load average before: {os.getloadavg()[0]:.2f}; 1 thread; CPU-seconds (process time)\n")
    for name, (low, high) in (("deep_networks", deep_networks(args.steps)),
                              ("paper_architectures", paper_architectures(args.steps))):
        print(f"{name}: at least {low / 3600:.1f} CPU-hours (about {low / 7200:.1f} h of wall time on 2 cores), "
              f"at worst {high / 3600:.0f} CPU-hours")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
