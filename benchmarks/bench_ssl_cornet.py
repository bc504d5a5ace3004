"""Costs at CPU scale of the SimSiam and CORnet experiments (prints; not a test).

1. SimSiam: pretraining on the embedded digits' pretraining part (time, loss, collapse statistic,
   linear-probe accuracy on the finetuning pool against the network at initialisation and the
   raw pixels), then one finetuning run per trained potential (time, chosen rate, gap closed).
2. CORnet-RT and CORnet-S scaled for digits: supervised pretraining with the deep-network
   chapter's loop (``finetune.train``, 2-norm, momentum 0.9, cosine rate; time, accuracy on the
   finetuning pool), then one finetuning pass per potential on N = floor(sqrt(D)) pool images at
   one fixed rate (time only: the learning-rate protocol belongs to the deep-network chapter).

Everything runs in a fresh temporary store (unless ``--root`` names one), so the times are computation times. The machine may
be shared: the load average is printed before and after.

Run:  .venv/bin/python benchmarks/bench_ssl_cornet.py [--threads 2] [--skip-simsiam] [--skip-cornet]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch

from synaptic_geometry import TRAINED_POTENTIALS
from synaptic_geometry.experiments import cornet, finetune, models, simsiam


class Clock:
    """Wall time and this process's CPU time (steadier on a shared machine) since start."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.wall:.1f} s wall, {time.process_time() - self.cpu:.1f} s CPU"


def bench_simsiam(args: argparse.Namespace) -> None:
    pretraining = simsiam.pretrain_params(args.backbone, args.width, epochs=args.ssl_epochs, lr=args.ssl_lr,
                                          batch_size=args.ssl_batch)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or scratch
        clock = Clock()
        result = simsiam.pretrain(pretraining, root=root)
        print(f"SimSiam {args.backbone} width {args.width}: D = {int(result['n_analysed'])}, "
              f"pretraining {clock} ({args.ssl_epochs} epochs, batch {args.ssl_batch})")
        print(f"  loss per epoch {result['epoch_loss'].round(3).tolist()}")
        print(f"  collapse statistic per epoch {result['epoch_std'].round(4).tolist()} "
              f"(1/sqrt(d) = {1 / math.sqrt(int(result['dim'])):.4f})")
        print(f"  pool: loss {float(result['pool_loss']):.3f}, statistic {float(result['pool_std']):.4f}")
        print(f"  linear probe on the pool: pretrained {float(result['probe_accuracy']):.3f}, at initialisation "
              f"{float(result['probe_accuracy_initial']):.3f}, pixels {float(result['probe_accuracy_pixels']):.3f}")
        for potential in args.potentials:
            params = simsiam.finetune_params(potential, 0, pretraining, lr_grid=args.ft_grid, epochs=args.ft_epochs,
                                             batch_size=args.ft_batch, lr_rule=args.lr_rule)
            clock = Clock()
            run = simsiam.finetune(params, root=root)
            scores = finetune.analyse(run)
            best = scores.sort_values("delta_cdf").iloc[0]
            print(f"  finetune {potential}: {clock} for {len(run['search_lr'])} rate(s) x {args.ft_epochs} epochs "
                  f"on N = {int(run['n_samples'])}; lr {float(run['lr']):g}, gap closed "
                  f"{run['search_gap_closed'].round(3).tolist()}, converged {bool(run['converged'])}, "
                  f"statistic {float(run['std_after']):.4f}; lowest Delta-CDF: {best['candidate']} "
                  f"({best['delta_cdf']:.3f})")


def bench_cornet(args: argparse.Namespace) -> None:
    pretrain_data, pool = finetune.protocol_data("mnist-embedded")
    for name in ("cornet-rt", "cornet-s"):
        model = cornet.ARCHITECTURES[name](pretrain_data.shape, pretrain_data.n_classes)
        dim = models.n_analysed(model)
        clock = Clock()
        result = finetune.train(model, pretrain_data, "2-norm", args.cornet_lr, args.cornet_epochs, args.cornet_batch,
                                momentum=0.9, seed=0)
        elapsed = str(clock)
        _, accuracy = finetune.evaluate(model, pool)
        print(f"{name}: D = {dim}, pretraining {elapsed} ({args.cornet_epochs} epochs), training accuracy "
              f"{result['accuracy']:.3f}, finetuning-pool accuracy {accuracy:.3f}")
        n = math.floor(math.sqrt(dim))
        images = pool.take(range(n))
        for potential in TRAINED_POTENTIALS:
            copy = cornet.ARCHITECTURES[name](pretrain_data.shape, pretrain_data.n_classes)
            copy.load_state_dict(model.state_dict())
            clock = Clock()
            run = finetune.train(copy, images, potential, args.ft_cornet_lr, args.ft_epochs, args.ft_batch, 0.9, seed=0)
            print(f"  one finetuning pass {potential}: {clock} "
                  f"({args.ft_epochs} epochs on N = {n}, lr {args.ft_cornet_lr}), training accuracy {run['accuracy']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-simsiam", action="store_true")
    parser.add_argument("--skip-cornet", action="store_true")
    parser.add_argument("--backbone", default="resnet10")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--ssl-epochs", type=int, default=8)
    parser.add_argument("--ssl-lr", type=float, default=0.1)
    parser.add_argument("--ssl-batch", type=int, default=64)
    parser.add_argument("--ft-grid", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--ft-epochs", type=int, default=20)
    parser.add_argument("--lr-rule", default="smallest_converged", choices=simsiam.LR_RULES)
    parser.add_argument("--potentials", nargs="+", default=list(TRAINED_POTENTIALS))
    parser.add_argument("--root", default=None, help="a store to reuse (default: a fresh temporary one)")
    parser.add_argument("--ft-batch", type=int, default=32)
    parser.add_argument("--cornet-epochs", type=int, default=3)
    parser.add_argument("--cornet-lr", type=float, default=0.05)
    parser.add_argument("--cornet-batch", type=int, default=128)
    parser.add_argument("--ft-cornet-lr", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}")
    if not args.skip_simsiam:
        bench_simsiam(args)
    if not args.skip_cornet:
        bench_cornet(args)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
