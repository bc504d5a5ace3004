"""The deep-network protocol: pretrain once, finetune with mirror descent, analyse the weight change.

One *run* = (architecture, trained potential, seed). It starts from the architecture's pretrained
weights (computed once, cached in the store and keyed by the pretraining parameters), draws
``N = floor(sqrt(D))`` finetuning images from the finetuning pool with its seed (D = number of
analysed weights, :func:`synaptic_geometry.experiments.models.analysed_weights`), and trains every parameter
with :class:`~synaptic_geometry.optim.MirrorDescent` under the trained potential (momentum 0.9,
cosine-annealed learning rate, cross-entropy). The learning rate is searched over a grid (lowest
final training loss wins); if the winner has not reached 100% training accuracy the search is
repeated with more epochs, up to a limit, and a run that still misses it is stored with
``reached_100 = False`` so the analysis can show or drop it, never silently keep it.

Exact zeros under negative entropy: exponentiated gradient multiplies a weight by a positive
factor, so an exact zero never moves. Under ``zero_policy="euclidean"`` (the default) a parameter
tensor that contains an exact zero at the start of finetuning is trained with the 2-norm instead
(the count is stored as ``n_euclidean_params``); analysed weights with an exact zero are an error
under this policy. ``zero_policy="nudge"`` replaces exact zeros by +-1e-6 (seeded signs) in every
parameter before finetuning, for every potential, so the stored "before" weights include the nudge.

Weights that never received a gradient (for MNIST, first-layer weights from pixels that are zero in
every finetuning image) are recorded in a ``touched/<name>`` mask; :func:`analyse` can exclude them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from synaptic_geometry.experiments import data as data_mod
from synaptic_geometry.experiments import models
from synaptic_geometry.gaussianity import domain_mask, identify
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.infra.sweep import is_done, run_sweep
from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, TRAINED_POTENTIALS, get_potential

ZERO_POLICIES = ("euclidean", "nudge")


def child_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of a run (subset, order, nudge, ...), derived from ``seed``."""
    tag = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1)[0])


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (``None`` leaves torch's default)."""
    if n is not None:
        torch.set_num_threads(int(n))


def check_potential(name: str) -> str:
    """Canonical potential name, or a ValueError naming the accepted ones."""

    return get_potential(name).name


# ---------------------------------------------------------------------------------------------
# Data for a protocol


def protocol_data(dataset: str, root: str | None = None, pixels: str = "unit") -> tuple[data_mod.ImageData, data_mod.ImageData]:
    """(pretraining part, finetuning pool) of a dataset: the embedded split, or train/test files from ``root``."""
    if dataset in data_mod.EMBEDDED:
        return data_mod.pretrain_finetune_split(data_mod.embedded(dataset, pixels))
    if dataset in ("mnist", "cifar10"):
        return data_mod.load(dataset, root, train=True), data_mod.load(dataset, root, train=False)
    raise ValueError(f"dataset {dataset!r} cannot be used for pretraining here; known: "
                     f"{', '.join(data_mod.EMBEDDED + ('mnist', 'cifar10'))} (ImageNet networks come pretrained)")


# ---------------------------------------------------------------------------------------------
# Training


def evaluate(model: nn.Module, data: data_mod.ImageData, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) on ``data``."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
            out = model(x)
            loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss / len(data), correct / len(data)


def _param_groups(model: nn.Module, potential: str, zero_policy: str, analysed: set[str]) -> tuple[list[dict], int]:
    """MirrorDescent parameter groups; under negative entropy, tensors with exact zeros use the 2-norm."""
    if potential != "negative_entropy":
        return [{"params": list(model.parameters()), "potential": potential}], 0
    main, euclidean = [], []
    for name, p in model.named_parameters():
        if bool((p == 0).any()):
            if name in analysed:
                raise ValueError(f"analysed weight {name} has exact zeros, which negative entropy cannot move; "
                                 "use zero_policy='nudge'")
            euclidean.append(p)
        else:
            main.append(p)
    groups = [{"params": main, "potential": potential}]
    if euclidean:
        groups.append({"params": euclidean, "potential": "2-norm"})
    return groups, len(euclidean)


def nudge_zeros(model: nn.Module, seed: int, size: float = 1e-6) -> int:
    """Replace exact zeros in every parameter by +-``size`` (seeded signs); returns how many were replaced."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for p in model.parameters():
            zero = p == 0
            n = int(zero.sum())
            if n:
                signs = torch.randint(0, 2, (n,), generator=gen).to(p.dtype) * 2 - 1
                p[zero] = size * signs
                count += n
    return count


def train(model: nn.Module, data: data_mod.ImageData, potential: str, lr: float, epochs: int,
          batch_size: int, momentum: float, seed: int, zero_policy: str = "euclidean",
          watch: dict[str, nn.Parameter] | None = None) -> dict:
    """Train ``model`` in place with MirrorDescent and a cosine schedule; returns loss, accuracy and masks.

    ``watch`` maps names to parameters whose elements are tracked: ``touched[name]`` is True where
    a nonzero gradient arrived at least once. Data order is drawn from a generator seeded by ``seed``.
    """

    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"unknown zero_policy {zero_policy!r}; known: {', '.join(ZERO_POLICIES)}")
    watch = watch or {}
    groups, n_euclidean = _param_groups(model, potential, zero_policy, set(watch))
    optimizer = MirrorDescent(groups, lr=lr, momentum=momentum)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)
    touched = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in watch.items()}
    model.train()
    diverged = False
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=order)
        for start in range(0, len(data), batch_size):
            index = perm[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(data.x[index]), data.y[index])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            for n, p in watch.items():
                if p.grad is not None:
                    touched[n] |= p.grad != 0
            try:
                optimizer.step()
            except FloatingPointError:  # a non-finite gradient or weight: this learning rate diverged
                diverged = True
                break
            schedule.step()
        if diverged:
            break
    final_loss, accuracy = evaluate(model, data)
    if diverged or not all(torch.isfinite(p).all() for p in model.parameters()) or not math.isfinite(final_loss):
        final_loss, accuracy = math.inf, 0.0
    return {"loss": final_loss, "accuracy": accuracy, "touched": touched, "n_euclidean_params": n_euclidean}


# ---------------------------------------------------------------------------------------------
# Pretraining (cached)


def _state_arrays(model: nn.Module, prefix: str = "state/") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _load_state(model: nn.Module, arrays: dict[str, np.ndarray], prefix: str = "state/") -> nn.Module:
    state = {k[len(prefix):]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"stored weights do not fit {type(model).__name__}: {error}") from error
    return model


def pretrain_params(arch: str, dataset: str = "mnist-embedded", epochs: int = 10, lr: float = 0.05,
                    batch_size: int = 128, seed: int = 0, data_root: str | None = None, pixels: str = "unit") -> dict:
    """Parameters of a pretraining (they form its key in the store)."""
    if arch not in models.ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} for pretraining here; known: {', '.join(models.ARCHITECTURES)}"
                         " (torchvision architectures load ImageNet weights instead)")
    return {"arch": arch, "dataset": dataset, "epochs": int(epochs), "lr": float(lr),
            "batch_size": int(batch_size), "seed": int(seed), "data_root": data_root, "pixels": pixels}


@experiment("pretrain")
def pretrain(params: dict) -> dict[str, np.ndarray]:
    """The pretrained weights and metrics for ``params`` (:func:`pretrain_params`), from the store or computed."""
    pretrain_data, pool = protocol_data(params["dataset"], params["data_root"], params["pixels"])
    model = models.build(params["arch"], pretrain_data.shape, pretrain_data.n_classes, seed=params["seed"])
    result = train(model, pretrain_data, "2-norm", params["lr"], params["epochs"], params["batch_size"],
                   momentum=0.9, seed=child_seed(params["seed"], "pretrain"))
    pool_loss, pool_accuracy = evaluate(model, pool)
    return {**_state_arrays(model), "train_loss": np.float64(result["loss"]),
            "train_accuracy": np.float64(result["accuracy"]), "pool_accuracy": np.float64(pool_accuracy)}


def imagenet_params(arch: str, weights_path: str | None, imagenet_root: str | None, download: bool = False) -> dict:
    """"Pretraining" parameters of a torchvision ImageNet network: where its weights and images come from."""
    if not models.is_torchvision(arch):
        raise ValueError(f"{arch!r} is not a torchvision architecture; known: {', '.join(models.TORCHVISION_ARCHITECTURES)}")
    return {"arch": arch, "weights_path": weights_path, "imagenet_root": imagenet_root, "download": bool(download)}


def availability(pretraining: dict) -> tuple[bool, str]:
    """Whether a run from ``pretraining`` can start here, and if not, why (for the chapter's skip note)."""
    if not models.is_torchvision(pretraining["arch"]):
        try:
            pre, pool = protocol_data(pretraining["dataset"], pretraining["data_root"], pretraining["pixels"])
        except (OSError, ValueError) as error:
            return False, f"data unavailable: {error}"
        n = math.floor(math.sqrt(models.n_analysed(models.build(pretraining["arch"], pre.shape, pre.n_classes))))
        if n > len(pool):
            return False, (f"needs N = {n} finetuning images but the {pretraining['dataset']} pool has {len(pool)}; "
                           "use a dataset with a larger test split (e.g. mnist from a local root)")
        return True, "own architecture, pretrained here"
    buildable, why = models.imagenet_builder(pretraining["arch"])
    if not buildable:
        return False, why
    weights = pretraining.get("weights_path")
    if not pretraining.get("download") and not (weights and Path(weights).exists()):
        return False, f"no ImageNet weights file for {pretraining['arch']} (weights_path={weights!r}) and download disabled"
    root = pretraining.get("imagenet_root")
    if not (root and Path(root).is_dir()):
        return False, f"no ImageNet validation folder (imagenet_root={root!r})"
    return True, "torchvision and ImageNet data present"


def pretrained_model(params: dict, root=None) -> nn.Module:
    """A network carrying the pretrained weights of ``params`` (own: from the store; torchvision: from its file)."""
    if models.is_torchvision(params["arch"]):
        return models.build_torchvision(params["arch"], params.get("weights_path"), params.get("download", False))
    arrays = pretrain(params, root=root)
    pretrain_data, _ = protocol_data(params["dataset"], params["data_root"], params["pixels"])
    model = models.build(params["arch"], pretrain_data.shape, pretrain_data.n_classes, seed=params["seed"])
    return _load_state(model, arrays)


def finetuning_images(params: dict, n: int, seed: int) -> data_mod.ImageData:
    """``n`` finetuning images drawn with ``seed``: from the embedded pool, a test split, or ImageNet's folder."""
    if models.is_torchvision(params["arch"]):
        return data_mod.load_image_folder(params["imagenet_root"], n=n, seed=seed)
    _, pool = protocol_data(params["dataset"], params["data_root"], params["pixels"])
    return data_mod.subset(pool, n, seed)


# ---------------------------------------------------------------------------------------------
# Finetuning (one run, cached)


def run_params(arch: str, potential: str, seed: int, pretraining: dict, lr_grid: Sequence[float] = (1e-3, 1e-2, 1e-1),
               epochs: int = 30, extra_epochs: int = 30, max_extensions: int = 1, batch_size: int = 256,
               momentum: float = 0.9, n_samples: int | None = None, zero_policy: str = "euclidean") -> dict:
    """Parameters of one finetuning run (validated; they form its key in the store)."""
    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"unknown zero_policy {zero_policy!r}; known: {', '.join(ZERO_POLICIES)}")
    if not lr_grid or any(lr <= 0 for lr in lr_grid):
        raise ValueError(f"lr_grid must be a non-empty list of positive rates; got {lr_grid}")
    if pretraining.get("arch") != arch:
        raise ValueError(f"pretraining parameters are for {pretraining.get('arch')!r}, not {arch!r}")
    return {"arch": arch, "potential": check_potential(potential), "seed": int(seed), "pretraining": dict(pretraining),
            "lr_grid": [float(lr) for lr in lr_grid], "epochs": int(epochs), "extra_epochs": int(extra_epochs),
            "max_extensions": int(max_extensions), "batch_size": int(batch_size), "momentum": float(momentum),
            "n_samples": None if n_samples is None else int(n_samples), "zero_policy": zero_policy}


@experiment("finetune")
def finetune(params: dict) -> dict[str, np.ndarray]:
    """One finetuning run (``params`` from :func:`run_params`): lr search and extensions; returns
    weights before/after, masks and the record."""
    pretrained = pretrained_model(params["pretraining"])
    seed = params["seed"]
    if params["zero_policy"] == "nudge":
        nudge_zeros(pretrained, child_seed(seed, "nudge"))
    dim = models.n_analysed(pretrained)
    n = params["n_samples"] or math.floor(math.sqrt(dim))
    finetune_data = finetuning_images(params["pretraining"], n, child_seed(seed, "subset"))
    before = {k: v.detach().numpy().copy() for k, v in models.analysed_weights(pretrained).items()}

    searched_lrs, searched_epochs, searched_losses, searched_accs = [], [], [], []
    best = None
    for extension in range(params["max_extensions"] + 1):
        epochs = params["epochs"] + extension * params["extra_epochs"]
        best = None
        for lr in params["lr_grid"]:
            model = copy.deepcopy(pretrained)
            watch = models.analysed_weights(model)
            result = train(model, finetune_data, params["potential"], lr, epochs, params["batch_size"],
                           params["momentum"], child_seed(seed, "order"), params["zero_policy"], watch)
            searched_lrs.append(lr), searched_epochs.append(epochs)
            searched_losses.append(result["loss"]), searched_accs.append(result["accuracy"])
            if best is None or result["loss"] < best[0]["loss"]:
                best = (result, model, lr, epochs)
        if best[0]["accuracy"] >= 1.0:
            break
    result, model, lr, epochs = best
    after = models.analysed_weights(model)
    arrays = {"dim": np.int64(dim), "n_samples": np.int64(n), "lr": np.float64(lr), "epochs": np.int64(epochs),
              "train_loss": np.float64(result["loss"]), "train_accuracy": np.float64(result["accuracy"]),
              "reached_100": np.bool_(result["accuracy"] >= 1.0),
              "n_euclidean_params": np.int64(result["n_euclidean_params"]),
              "search_lr": np.asarray(searched_lrs), "search_epochs": np.asarray(searched_epochs),
              "search_loss": np.asarray(searched_losses), "search_accuracy": np.asarray(searched_accs),
              "layers": np.asarray(list(before), dtype=str)}
    for name in before:
        arrays[f"before/{name}"] = before[name]
        arrays[f"after/{name}"] = after[name].detach().numpy().copy()
        arrays[f"touched/{name}"] = result["touched"][name].numpy()
    return arrays


# ---------------------------------------------------------------------------------------------
# Analysis


def weights(arrays: dict[str, np.ndarray], exclude_untouched: bool = False,
            layers: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (before, after) over ``layers`` (default all analysed), optionally only touched weights."""
    layers = list(arrays["layers"]) if layers is None else list(layers)
    before, after = [], []
    for name in layers:
        keep = arrays[f"touched/{name}"].ravel() if exclude_untouched else slice(None)
        before.append(arrays[f"before/{name}"].ravel()[keep])
        after.append(arrays[f"after/{name}"].ravel()[keep])
    return np.concatenate(before).astype(np.float64), np.concatenate(after).astype(np.float64)


def analyse(arrays: dict[str, np.ndarray], candidates: Sequence[str] = CANDIDATE_POTENTIALS,
            exclude_untouched: bool = False, per_layer: bool = False) -> pd.DataFrame:
    """Delta-CDF and magnitude under each candidate potential, pooled over layers or per layer.

    Every candidate sees the same weights: those inside every candidate's domain
    (:func:`~synaptic_geometry.gaussianity.domain_mask`; for negative entropy, weights that kept
    their sign), and, if ``exclude_untouched``, only weights that received a gradient.
    Columns: layer ("pooled" or a weight name), candidate, delta_cdf, magnitude, rank,
    n_weights (analysed), n_sign_changes (weights that crossed zero, dropped).
    """

    groups = [[str(n)] for n in arrays["layers"]] if per_layer else [None]
    frames = []
    for layers in groups:
        before, after = weights(arrays, exclude_untouched, layers)
        keep = domain_mask(before, after, candidates)
        table = identify(before[keep], after[keep], candidates=tuple(candidates)).reset_index(drop=True)
        table["rank"] = np.arange(1, len(table) + 1)
        table.insert(0, "layer", layers[0] if layers else "pooled")
        table["n_weights"] = int(keep.sum())
        table["n_sign_changes"] = int((np.sign(before) != np.sign(after)).sum())
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def identification_matrix(inferred: pd.DataFrame, trained_col: str = "potential", inferred_col: str = "inferred",
                          trained: Sequence[str] = TRAINED_POTENTIALS,
                          candidates: Sequence[str] = CANDIDATE_POTENTIALS) -> pd.DataFrame:
    """Counts of runs by trained potential (rows) and inferred potential (columns), all candidates shown."""
    table = pd.crosstab(inferred[trained_col], inferred[inferred_col])
    return table.reindex(index=list(trained), columns=list(candidates), fill_value=0).fillna(0).astype(int)


# ---------------------------------------------------------------------------------------------
# Sweeps over (architecture x trained potential x seed)


def plan(architectures: Sequence[str], potentials: Sequence[str], seeds: Iterable[int], pretraining: dict[str, dict],
         **run_options) -> list[dict]:
    """Parameters of every run, architecture-major (``pretraining`` maps architecture to its parameters)."""
    unknown = [a for a in architectures if a not in models.known_architectures()]
    if unknown:
        raise ValueError(f"unknown architecture(s) {unknown}; known: {', '.join(models.known_architectures())}")
    potentials = [check_potential(p) for p in potentials]
    return [run_params(arch, potential, seed, pretraining[arch], **run_options)
            for arch in architectures for potential in potentials for seed in seeds]


def run_all(runs: Sequence[dict], root=None, executor: str = "local", workers: int = 1, threads: int | None = 1,
            progress: bool = True, **sweep_options):
    """Pretrain what is needed, then finetune every run, as resumable sweeps; returns both sweep results."""

    pretrainings = {json_key(r["pretraining"]): r["pretraining"] for r in runs
                    if not models.is_torchvision(r["arch"])}
    first = run_sweep(pretrain, [{"params": p} for p in pretrainings.values()], root, executor, workers, threads,
                      progress, label_keys=["arch", "dataset"], **sweep_options)
    second = run_sweep(finetune, [{"params": r} for r in runs], root, executor, workers, threads, progress,
                       label_keys=["arch", "potential", "seed"], **sweep_options)
    return first, second


def json_key(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True)


def collect(runs: Sequence[dict], root=None, exclude_untouched: bool = False, per_layer: bool = False,
            candidates: Sequence[str] = CANDIDATE_POTENTIALS) -> pd.DataFrame:
    """Scores of every finished run: one row per (run, layer, candidate) with the run's record attached."""

    frames = []
    for params in runs:
        if not is_done(finetune, {"params": params}, root):
            continue
        arrays = finetune(params, root=root)
        table = analyse(arrays, candidates, exclude_untouched, per_layer)
        table.insert(0, "seed", params["seed"])
        table.insert(0, "potential", params["potential"])
        table.insert(0, "arch", params["arch"])
        table["dim"] = int(arrays["dim"])
        table["n_samples"] = int(arrays["n_samples"])
        table["lr"] = float(arrays["lr"])
        table["epochs"] = int(arrays["epochs"])
        table["train_accuracy"] = float(arrays["train_accuracy"])
        table["reached_100"] = bool(arrays["reached_100"])
        frames.append(table)
    if not frames:
        raise ValueError("no finished runs to collect; run the sweep first")
    return pd.concat(frames, ignore_index=True)


def inferred(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer): the inferred potential (lowest Delta-CDF) and whether it is the trained one."""
    best = scores[scores["rank"] == 1].rename(columns={"candidate": "inferred"})
    best = best.drop(columns=["rank"]).reset_index(drop=True)
    best["correct"] = best["inferred"] == best["potential"]
    return best
