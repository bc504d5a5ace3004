"""The deep-network protocol: pretrain once, finetune with mirror descent, analyse the weight change.

One *run* = (architecture, trained potential, seed). It starts from the architecture's pretrained
weights (computed once, cached in the store and keyed by the pretraining parameters), draws
``N = floor(sqrt(D))`` finetuning images from the finetuning pool with its seed (D = number of
analysed weights, :func:`synaptic_geometry.experiments.models.analysed_weights`), and trains every parameter
with :class:`~synaptic_geometry.optim.MirrorDescent` under the trained potential (momentum 0.9,
cosine-annealed learning rate, cross-entropy).

The protocol is a set of named options, validated and stored in each run's parameters:

* **Pretraining** (:func:`pretrain_params`) stops by a stated rule (``until``): after a fixed
  number of ``epochs`` (``"epochs"``), at the first epoch whose training accuracy reaches
  ``target_accuracy`` (``"train_accuracy"``), or when the training loss improved by less than a
  relative ``tol`` over ``patience`` epochs (``"loss_plateau"``); ``epochs`` is the cap of the last
  two. The cosine schedule spans the cap. What happened (epochs run, whether the rule was met, the
  loss and accuracy after every epoch) is stored with the weights.
* **The learning rate** (:func:`run_params`, ``lr_rule``) is searched over ``lr_grid``:
  ``"lowest_loss"`` (the published rule) takes the rate with the lowest final training loss;
  ``"smallest_reaching_100"`` takes the smallest rate whose run reaches 100% training accuracy.
  The second is the small-change rule: the Gaussian argument is a first-order one (the dual change
  is a sum of many small gradient contributions taken near the pretrained weights), and among the
  rates that fit the finetuning set, the smallest moves the weights least. Under either rule, if
  the chosen run has not reached 100% training accuracy the search is repeated with more epochs, up
  to a limit, and a run that still misses it is stored with ``reached_100 = False`` so the analysis
  can show or drop it, never silently keep it. A chosen rate at either end of the grid is flagged
  (``lr_at_grid_end``): the search did not bracket it.
  Each training at one (rate, epochs) is its own stored *unit* (:func:`finetune_unit`, keyed by
  the run's parameters without the rule, the grid and the extensions), so the two rules choose
  among the same trainings: a rule computed after the other trains only the units the other did
  not need (:func:`search` is the one implementation of both rules).
  Three options cut the search's cost (:func:`run_params`): ``stop_at_100`` ends each training at
  the first epoch at 100% training accuracy (the small-change rule's "stop as soon as the data are
  fit"); ``bracket`` stops the search once its answer is bracketed inside the grid; ``start_lr``
  starts a bracketed search at a given rate (e.g. the small-change search at the published rule's).
* Every run records the change magnitude under the trained potential, the relative change of the
  weights themselves, the fraction of analysed weights that crossed zero, the chosen rate, the
  epochs and the training accuracy (:data:`RECORD_FIELDS`).

Where the run computes is a machine argument (``device``: ``cpu``, the default, ``cuda`` or
``auto``) that stays out of the result's key; on CUDA the forward pass runs under autocast with a
gradient scaler (:class:`~synaptic_geometry.devices.MixedPrecision`), while parameters, gradients
and the optimizer's dual-space arithmetic stay float32. The device used is stored in the result.

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

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from synaptic_geometry.devices import MixedPrecision, resolve_device
from synaptic_geometry.experiments import data as data_mod
from synaptic_geometry.experiments import models
from synaptic_geometry.gaussianity import change_magnitude, domain_mask, identify
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.infra.sweep import is_done, run_sweep
from synaptic_geometry.optim import MirrorDescent
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, TRAINED_POTENTIALS, get_potential

ZERO_POLICIES = ("euclidean", "nudge")
PRETRAIN_RULES = ("epochs", "train_accuracy", "loss_plateau")
LR_RULES = ("lowest_loss", "smallest_reaching_100")
# The record of a run, as stored in its arrays (scalars) and attached to every analysis row by collect().
RECORD_FIELDS = ("dim", "n_samples", "lr", "lr_rule", "lr_at_grid_end", "epochs", "epochs_run", "train_loss",
                 "train_accuracy", "reached_100", "change_magnitude", "relative_change", "fraction_crossed_zero")


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
    """Mean cross-entropy and accuracy of ``model`` (in eval mode, float32, on its device) on ``data``."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = data.x[start:start + batch_size].to(device)
            y = data.y[start:start + batch_size].to(device)
            out = model(x).float()
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
          watch: dict[str, nn.Parameter] | None = None, device: str | torch.device = "cpu",
          stop: Callable[[int, nn.Module], bool] | None = None) -> dict:
    """Train ``model`` in place with MirrorDescent and a cosine schedule; returns loss, accuracy and masks.

    ``watch`` maps names to parameters whose elements are tracked: ``touched[name]`` is True where
    a nonzero gradient arrived at least once. Data order is drawn from a generator seeded by ``seed``.
    The model is moved to ``device`` (a setting for :func:`~synaptic_geometry.devices.resolve_device`
    or a ``torch.device``) and trained there, with mixed precision on CUDA. ``stop(epoch, model)``,
    if given, is called after every epoch (1-based) and ends training when it returns True; the
    cosine schedule still spans ``epochs``. ``epochs_run`` is the number of epochs trained.
    """

    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"unknown zero_policy {zero_policy!r}; known: {', '.join(ZERO_POLICIES)}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(device)
    watch = watch or {}
    groups, n_euclidean = _param_groups(model, potential, zero_policy, set(watch))
    optimizer = MirrorDescent(groups, lr=lr, momentum=momentum)
    amp = MixedPrecision(device)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)
    touched = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in watch.items()}
    x_all, y_all = data.x.to(device), data.y.to(device)
    model.train()
    diverged = False
    epochs_run = 0
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(data), generator=order).to(device)
        for start in range(0, len(data), batch_size):
            index = perm[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            with amp.autocast():
                loss = nn.functional.cross_entropy(model(x_all[index]), y_all[index])
            if not torch.isfinite(loss):
                diverged = True
                break
            try:
                if amp.enabled:
                    amp.scaler.scale(loss).backward()
                else:
                    loss.backward()
                for n, p in watch.items():
                    if p.grad is not None:
                        touched[n] |= p.grad != 0
                if amp.enabled:
                    amp.scaler.step(optimizer)  # unscales first; skips the step on inf/nan gradients
                    amp.scaler.update()
                else:
                    optimizer.step()
            except FloatingPointError:  # a non-finite gradient or weight: this learning rate diverged
                diverged = True
                break
            schedule.step()
        epochs_run = epoch
        if diverged or (stop is not None and stop(epoch, model)):
            break
    final_loss, accuracy = evaluate(model, data)
    if diverged or not all(torch.isfinite(p).all() for p in model.parameters()) or not math.isfinite(final_loss):
        final_loss, accuracy = math.inf, 0.0
    return {"loss": final_loss, "accuracy": accuracy, "touched": {n: t.cpu() for n, t in touched.items()},
            "n_euclidean_params": n_euclidean, "epochs_run": epochs_run, "diverged": diverged}


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
                    batch_size: int = 128, seed: int = 0, data_root: str | None = None, pixels: str = "unit",
                    until: str = "epochs", target_accuracy: float = 1.0, patience: int = 3,
                    tol: float = 0.05) -> dict:
    """Parameters of a pretraining (validated; they form its key in the store).

    ``until`` is the stopping rule (:data:`PRETRAIN_RULES`): ``"epochs"`` trains exactly ``epochs``
    epochs; ``"train_accuracy"`` stops after the first epoch whose training accuracy is at least
    ``target_accuracy``; ``"loss_plateau"`` stops after the first epoch ``e > patience`` whose
    training loss is above ``(1 - tol)`` times the loss ``patience`` epochs earlier. For the last two,
    ``epochs`` is the cap (the run is then stored with ``converged = False``). The rule's own
    settings are stored only for the rule that uses them, so equal pretrainings share a key.
    """
    if arch not in models.ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} for pretraining here; known: {', '.join(models.ARCHITECTURES)}"
                         " (torchvision architectures load ImageNet weights instead)")
    if until not in PRETRAIN_RULES:
        raise ValueError(f"unknown pretraining rule until={until!r}; known: {', '.join(PRETRAIN_RULES)}")
    if int(epochs) < 1 or int(batch_size) < 1 or not float(lr) > 0:
        raise ValueError(f"pretraining needs epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    params = {"arch": arch, "dataset": dataset, "epochs": int(epochs), "lr": float(lr),
              "batch_size": int(batch_size), "seed": int(seed), "data_root": data_root, "pixels": pixels,
              "until": until}
    if until == "train_accuracy":
        if not 0 < target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1]; got {target_accuracy}")
        params["target_accuracy"] = float(target_accuracy)
    if until == "loss_plateau":
        if int(patience) < 1 or not 0 < tol < 1:
            raise ValueError(f"loss_plateau needs patience >= 1 and 0 < tol < 1; got {patience}, {tol}")
        params.update(patience=int(patience), tol=float(tol))
    return params


class _Convergence:
    """The stopping rule of a pretraining, called after each epoch; keeps the per-epoch history."""

    def __init__(self, params: dict, data: data_mod.ImageData):
        self.params, self.data = params, data
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.met = False

    def __call__(self, epoch: int, model: nn.Module) -> bool:
        loss, accuracy = evaluate(model, self.data)
        self.losses.append(loss), self.accuracies.append(accuracy)
        rule = self.params["until"]
        if rule == "train_accuracy":
            self.met = accuracy >= self.params["target_accuracy"]
        elif rule == "loss_plateau" and epoch > self.params["patience"]:
            self.met = loss > (1 - self.params["tol"]) * self.losses[-1 - self.params["patience"]]
        return self.met


@experiment("pretrain", machine=("device",))
def pretrain(params: dict, device: str = "cpu") -> dict[str, np.ndarray]:
    """The pretrained weights and metrics for ``params`` (:func:`pretrain_params`), from the store or computed.

    Besides the weights (``state/<name>``): ``train_loss``, ``train_accuracy`` and ``pool_accuracy``
    at the end, ``epochs_run``, ``converged`` (the stopping rule was met; always True for
    ``until="epochs"``), and ``epoch_loss`` / ``epoch_accuracy`` on the pretraining data after every epoch.
    """
    pretrain_data, pool = protocol_data(params["dataset"], params["data_root"], params["pixels"])
    model = models.build(params["arch"], pretrain_data.shape, pretrain_data.n_classes, seed=params["seed"])
    rule = _Convergence(params, pretrain_data)
    result = train(model, pretrain_data, "2-norm", params["lr"], params["epochs"], params["batch_size"],
                   momentum=0.9, seed=child_seed(params["seed"], "pretrain"), device=device, stop=rule)
    pool_loss, pool_accuracy = evaluate(model, pool)
    converged = True if params["until"] == "epochs" else rule.met
    return {**_state_arrays(model), "train_loss": np.float64(result["loss"]),
            "train_accuracy": np.float64(result["accuracy"]), "pool_accuracy": np.float64(pool_accuracy),
            "epochs_run": np.int64(result["epochs_run"]), "converged": np.bool_(converged),
            "epoch_loss": np.asarray(rule.losses, dtype=np.float64),
            "epoch_accuracy": np.asarray(rule.accuracies, dtype=np.float64),
            "device": np.asarray(str(resolve_device(device) if isinstance(device, str) else device))}


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


def pretrained_model(params: dict, root=None, device: str = "cpu") -> nn.Module:
    """A network carrying the pretrained weights of ``params`` (own: from the store, pretrained on
    ``device`` if absent; torchvision: from its file), on the CPU."""
    if models.is_torchvision(params["arch"]):
        return models.build_torchvision(params["arch"], params.get("weights_path"), params.get("download", False))
    arrays = pretrain(params, root=root, device=device)
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
               momentum: float = 0.9, n_samples: int | None = None, zero_policy: str = "euclidean",
               lr_rule: str = "lowest_loss", stop_at_100: bool = False, bracket: bool = False,
               start_lr: float | None = None) -> dict:
    """Parameters of one finetuning run (validated; they form its key in the store).

    ``lr_rule`` (:data:`LR_RULES`): ``"lowest_loss"``, the published rule, runs every rate of
    ``lr_grid`` and takes the lowest final training loss; ``"smallest_reaching_100"`` runs the rates
    in increasing order and takes the first whose run reaches 100% training accuracy. The grid is
    stored sorted. ``seed`` must be a non-negative integer.

    ``stop_at_100``: each training stops at the first epoch whose training accuracy is 100%
    (``epochs`` is then the cap; the cosine schedule still spans it). ``bracket`` and ``start_lr``:
    the search stops once its answer is bracketed inside the grid (:func:`search`). These three
    enter the parameters only when set, so runs without them keep their keys.
    """
    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"unknown zero_policy {zero_policy!r}; known: {', '.join(ZERO_POLICIES)}")
    if lr_rule not in LR_RULES:
        raise ValueError(f"unknown lr_rule {lr_rule!r}; known: {', '.join(LR_RULES)}")
    if not lr_grid or any(not lr > 0 for lr in lr_grid) or len(set(lr_grid)) != len(lr_grid):
        raise ValueError(f"lr_grid must be a non-empty list of distinct positive rates; got {lr_grid}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if int(epochs) < 1 or int(extra_epochs) < 0 or int(max_extensions) < 0 or int(batch_size) < 1:
        raise ValueError(f"need epochs >= 1, extra_epochs >= 0, max_extensions >= 0, batch_size >= 1; got "
                         f"{epochs}, {extra_epochs}, {max_extensions}, {batch_size}")
    if n_samples is not None and int(n_samples) < 2:
        raise ValueError(f"n_samples must be at least 2 (or None for floor(sqrt(D))); got {n_samples}")
    if pretraining.get("arch") != arch:
        raise ValueError(f"pretraining parameters are for {pretraining.get('arch')!r}, not {arch!r}")
    if start_lr is not None and (not bracket or float(start_lr) not in [float(lr) for lr in lr_grid]):
        raise ValueError(f"start_lr needs bracket=True and a rate of the grid; "
                         f"got start_lr={start_lr}, bracket={bracket}, grid {list(lr_grid)}")
    search_options = {**({"stop_at_100": True} if stop_at_100 else {}), **({"bracket": True} if bracket else {}),
                      **({"start_lr": float(start_lr)} if start_lr is not None else {})}
    return {"arch": arch, "potential": check_potential(potential), "seed": int(seed), "pretraining": dict(pretraining),
            "lr_grid": sorted(float(lr) for lr in lr_grid), "lr_rule": lr_rule, "epochs": int(epochs),
            "extra_epochs": int(extra_epochs), "max_extensions": int(max_extensions), "batch_size": int(batch_size),
            "momentum": float(momentum), "n_samples": None if n_samples is None else int(n_samples),
            "zero_policy": zero_policy, **search_options}


def change_record(before: dict[str, np.ndarray], after: dict[str, np.ndarray], potential: str) -> dict[str, float]:
    """How far finetuning moved the analysed weights (pooled over layers).

    ``change_magnitude``: ``||grad phi(after) - grad phi(before)|| / ||grad phi(before)||`` under the
    trained potential, over the weights it can analyse (for negative entropy, those that are
    nonzero; it keeps signs); ``relative_change``: ``||after - before|| / ||before||``;
    ``fraction_crossed_zero``: fraction of weights outside the sign-keeping domain
    (:func:`~synaptic_geometry.gaussianity.domain_mask`: the sign differs before and after, or the
    weight is zero before or after; analysed weights are never zero before, see the module).
    """
    b = np.concatenate([np.asarray(before[k], dtype=np.float64).ravel() for k in before])
    a = np.concatenate([np.asarray(after[k], dtype=np.float64).ravel() for k in before])
    keep = domain_mask(b, a, [potential])
    if not np.isfinite(a).all() or not keep.any():  # a diverged run: nothing to measure
        return {"change_magnitude": math.nan, "relative_change": math.nan, "fraction_crossed_zero": math.nan}
    return {"change_magnitude": change_magnitude(b[keep], a[keep], potential),
            "relative_change": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
            "fraction_crossed_zero": float(np.mean(~domain_mask(b, a)))}


# Run parameters that a single-rate unit shares with its run: everything but the search.
UNIT_KEYS = ("arch", "potential", "seed", "pretraining", "batch_size", "momentum", "n_samples", "zero_policy")


def unit_params(params: dict, lr: float, epochs: int) -> dict:
    """Parameters of the single-rate unit of a run (``params`` from :func:`run_params`) at ``lr`` and ``epochs``.

    They leave out what only the search uses (the rule, the grid, the extensions), so every run
    that differs only there (the two learning-rate rules) finds the same unit in the store.
    """
    if not lr > 0 or int(epochs) < 1:
        raise ValueError(f"a unit needs lr > 0 and epochs >= 1; got {lr}, {epochs}")
    stop = {"stop_at_100": True} if params.get("stop_at_100") else {}
    return {**{k: params[k] for k in UNIT_KEYS}, **stop, "lr": float(lr), "epochs": int(epochs)}


def finetuning_count(n_samples: int | None, dim: int) -> int:
    """N, the number of finetuning images: ``n_samples`` when set, else floor(sqrt(D))."""
    return int(n_samples) if n_samples else math.isqrt(int(dim))


def _starting_point(params: dict, device: str) -> tuple[nn.Module, data_mod.ImageData, int, int]:
    """The pretrained network (nudged if the policy says so), the run's N images, D and N."""
    pretrained = pretrained_model(params["pretraining"], device=device)
    seed = params["seed"]
    if params["zero_policy"] == "nudge":
        nudge_zeros(pretrained, child_seed(seed, "nudge"))
    dim = models.n_analysed(pretrained)
    n = finetuning_count(params["n_samples"], dim)
    return pretrained, finetuning_images(params["pretraining"], n, child_seed(seed, "subset")), dim, n


@experiment("finetune_unit", machine=("device",))
def finetune_unit(params: dict, device: str = "cpu") -> dict[str, np.ndarray]:
    """Finetuning at one learning rate for one number of epochs (``params`` from :func:`unit_params`):
    final training loss and accuracy, the analysed weights after and their touched masks.

    Cached on its own, so that runs differing only in the learning-rate rule share the trainings
    of their grids: a rule only chooses among stored units (:func:`search`). With ``stop_at_100``
    the training stops after the first epoch at 100% training accuracy (``epochs_run``)."""
    resolved = resolve_device(device)
    model, data, _, _ = _starting_point(params, device)
    watch = models.analysed_weights(model)
    stop = (lambda epoch, net: evaluate(net, data)[1] >= 1.0) if params.get("stop_at_100") else None
    result = train(model, data, params["potential"], params["lr"], params["epochs"], params["batch_size"],
                   params["momentum"], child_seed(params["seed"], "order"), params["zero_policy"], watch, resolved,
                   stop=stop)
    arrays = {"loss": np.float64(result["loss"]), "accuracy": np.float64(result["accuracy"]),
              "epochs_run": np.int64(result["epochs_run"]), "diverged": np.bool_(result["diverged"]),
              "n_euclidean_params": np.int64(result["n_euclidean_params"]),
              "device": np.asarray(str(resolved)), "mixed_precision": np.bool_(resolved.type == "cuda"),
              "layers": np.asarray(list(watch), dtype=str)}
    for name, weight in models.analysed_weights(model).items():
        arrays[f"after/{name}"] = weight.detach().cpu().numpy().copy()
        arrays[f"touched/{name}"] = result["touched"][name].numpy()
    return arrays


def search(lr_rule: str, lr_grid: Sequence[float], epochs: int, extra_epochs: int, max_extensions: int,
           outcome: Callable[[float, int], dict], bracket: bool = False,
           start_lr: float | None = None) -> tuple[list[tuple[float, int, dict]], int]:
    """The learning-rate search of a run: the (rate, epochs, outcome) tried, in order, and the chosen index.

    ``outcome(lr, epochs)`` gives a unit's result (a mapping with ``loss`` and ``accuracy``).
    ``lowest_loss`` tries every rate and takes the lowest final loss; ``smallest_reaching_100``
    tries the rates upwards and takes the first that reaches 100% training accuracy (if none does,
    the lowest loss). When the chosen unit misses 100%, the search is repeated with
    ``extra_epochs`` more epochs, at most ``max_extensions`` times. A diverged rate has an
    infinite loss and is never preferred to a finite one.

    ``bracket=True`` tries only the rates needed to bracket the answer inside the grid, from the
    grid rate ``start_lr`` (default the smallest). ``lowest_loss`` tries the start and the rate
    above it, then walks in the direction in which the loss fell, one rate at a time, until the
    loss stops falling (assumption: the loss after a fixed number of epochs falls with the rate up
    to its best rate and rises above it). ``smallest_reaching_100`` walks down from a start that
    reaches 100% to the first rate that does not (assumption: the rates that fit are neighbours
    in the grid, and the published rule's rate, the start, is among them when any is); a start
    that does not reach 100% ends the search (the run does not fit); without ``start_lr`` it walks
    up from the smallest rate as the full search does.
    """
    if lr_rule not in LR_RULES:
        raise ValueError(f"unknown lr_rule {lr_rule!r}; known: {', '.join(LR_RULES)}")
    grid = sorted(lr_grid)
    if start_lr is not None and start_lr not in grid:
        raise ValueError(f"start_lr {start_lr} is not a rate of the grid {grid}")
    tried: list[tuple[float, int, dict]] = []
    chosen = -1
    for extension in range(int(max_extensions) + 1):
        n_epochs = int(epochs) + extension * int(extra_epochs)
        first = len(tried)

        def attempt(lr: float) -> dict:
            result = outcome(lr, n_epochs)
            tried.append((lr, n_epochs, result))
            return result

        start = grid.index(start_lr) if start_lr is not None else 0
        if bracket and lr_rule == "lowest_loss":
            _bracket_lowest_loss(grid, start, attempt)
        elif bracket and start_lr is not None:
            _bracket_smallest_reaching(grid, start, attempt)
        else:
            for lr in grid:
                if float(attempt(lr)["accuracy"]) >= 1.0 and lr_rule == "smallest_reaching_100":
                    break
        chosen = _choose(lr_rule, tried, first)
        if float(tried[chosen][2]["accuracy"]) >= 1.0:
            break
    return tried, chosen


def _bracket_lowest_loss(grid: Sequence[float], start: int, attempt: Callable[[float], dict]) -> None:
    """Try rates of ``grid`` from index ``start`` until the lowest loss is bracketed (see :func:`search`)."""
    def loss(i: int) -> float:
        return float(attempt(grid[i])["loss"])

    best = loss(start)
    if start + 1 < len(grid):
        above = loss(start + 1)
        if above < best:  # the loss falls upwards: walk up
            best = above
            for i in range(start + 2, len(grid)):
                current = loss(i)
                if current >= best:
                    return
                best = current
            return
    for i in range(start - 1, -1, -1):  # otherwise walk down
        current = loss(i)
        if current >= best:
            return
        best = current


def _bracket_smallest_reaching(grid: Sequence[float], start: int, attempt: Callable[[float], dict]) -> None:
    """From index ``start``, if it reaches 100%, try rates downwards to the first that does not."""
    if float(attempt(grid[start])["accuracy"]) < 1.0:
        return
    for i in range(start - 1, -1, -1):
        if float(attempt(grid[i])["accuracy"]) < 1.0:
            return


def _choose(lr_rule: str, tried: Sequence[tuple[float, int, dict]], first: int) -> int:
    """Index in ``tried`` of the rule's choice among the entries from ``first`` on: the smallest rate
    at 100% training accuracy (``smallest_reaching_100``, if any), else the lowest final loss (the
    smallest rate among equal losses)."""
    entries = range(first, len(tried))
    if lr_rule == "smallest_reaching_100":
        reached = [i for i in entries if float(tried[i][2]["accuracy"]) >= 1.0]
        if reached:
            return min(reached, key=lambda i: tried[i][0])
    return min(entries, key=lambda i: (float(tried[i][2]["loss"]), tried[i][0]))


def base_units(runs: Sequence[dict]) -> list[dict]:
    """The distinct units that the runs certainly need before any extension: the whole grid at the
    first number of epochs for ``lowest_loss`` runs without ``bracket`` (the other runs stop early,
    so its units are computed by the run itself, or found stored from a ``lowest_loss`` twin)."""
    unique: dict[str, dict] = {}
    for run in runs:
        if run["lr_rule"] == "lowest_loss" and not run.get("bracket"):
            for lr in run["lr_grid"]:
                unit = unit_params(run, lr, run["epochs"])
                unique.setdefault(json_key(unit), unit)
    return list(unique.values())


@experiment("finetune", machine=("device",))
def finetune(params: dict, device: str = "cpu") -> dict[str, np.ndarray]:
    """One finetuning run (``params`` from :func:`run_params`): the rate chosen by the run's rule
    among the stored single-rate units (:func:`finetune_unit`, computed when absent; :func:`search`);
    returns weights before/after, masks and the record (:data:`RECORD_FIELDS`, the search, the
    device used by the chosen unit)."""
    pretrained, _, dim, n = _starting_point(params, device)
    before = {k: v.detach().cpu().numpy().copy() for k, v in models.analysed_weights(pretrained).items()}
    grid = sorted(params["lr_grid"])
    tried, index = search(params["lr_rule"], grid, params["epochs"], params["extra_epochs"], params["max_extensions"],
                          lambda lr, epochs: finetune_unit(unit_params(params, lr, epochs), device=device),
                          bracket=params.get("bracket", False), start_lr=params.get("start_lr"))
    lr, epochs, chosen = tried[index]
    after = {k: chosen[f"after/{k}"] for k in before}
    accuracy = float(chosen["accuracy"])
    arrays = {"dim": np.int64(dim), "n_samples": np.int64(n), "lr": np.float64(lr),
              "lr_rule": np.asarray(params["lr_rule"]), "lr_at_grid_end": np.bool_(lr in (grid[0], grid[-1])),
              "epochs": np.int64(epochs), "epochs_run": np.int64(chosen["epochs_run"]),
              "train_loss": np.float64(chosen["loss"]),
              "train_accuracy": np.float64(accuracy), "reached_100": np.bool_(accuracy >= 1.0),
              **{k: np.float64(v) for k, v in change_record(before, after, params["potential"]).items()},
              "n_euclidean_params": np.int64(chosen["n_euclidean_params"]),
              "search_lr": np.asarray([t[0] for t in tried]), "search_epochs": np.asarray([t[1] for t in tried]),
              "search_loss": np.asarray([float(t[2]["loss"]) for t in tried]),
              "search_accuracy": np.asarray([float(t[2]["accuracy"]) for t in tried]),
              "device": chosen["device"], "mixed_precision": chosen["mixed_precision"],
              "layers": np.asarray(list(before), dtype=str)}
    for name in before:
        arrays[f"before/{name}"] = before[name]
        arrays[f"after/{name}"] = after[name]
        arrays[f"touched/{name}"] = chosen[f"touched/{name}"]
    return arrays


def record(arrays: dict[str, np.ndarray]) -> dict:
    """The run's record (:data:`RECORD_FIELDS`) as plain Python values."""
    return {k: np.asarray(arrays[k]).item() for k in RECORD_FIELDS}


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
        table["n_sign_changes"] = int((~domain_mask(before, after)).sum())
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
            progress: bool = True, device: str = "cpu", **sweep_options):
    """Pretrain what is needed, train the single-rate units every run certainly needs
    (:func:`base_units`), then make every run (choosing among stored units, training those still
    missing), as resumable sweeps; returns the three sweeps' results (pretraining, units, runs).

    ``device`` (the machine setting: ``cpu``, ``cuda`` or ``auto``) is where every job computes; it
    is not part of the results' keys."""

    resolve_device(device)  # a bad setting fails here, not in every worker
    pretrainings = {json_key(r["pretraining"]): r["pretraining"] for r in runs
                    if not models.is_torchvision(r["arch"])}
    first = run_sweep(pretrain, [{"params": p, "device": device} for p in pretrainings.values()], root, executor,
                      workers, threads, progress, label_keys=["arch", "dataset"], **sweep_options)
    second = run_sweep(finetune_unit, [{"params": u, "device": device} for u in base_units(runs)], root, executor,
                       workers, threads, progress, label_keys=["arch", "potential", "seed", "lr", "epochs"],
                       **sweep_options)
    third = run_sweep(finetune, [{"params": r, "device": device} for r in runs], root, executor, workers, threads,
                      progress, label_keys=["arch", "potential", "seed", "lr_rule"], **sweep_options)
    return first, second, third


def json_key(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True)


def collect(runs: Sequence[dict], root=None, exclude_untouched: bool = False, per_layer: bool = False,
            candidates: Sequence[str] = CANDIDATE_POTENTIALS) -> pd.DataFrame:
    """Scores of every finished run: one row per (run, layer, candidate) with the run's record attached."""

    def columns(params: dict, arrays: dict) -> tuple[dict, dict]:
        return {k: params[k] for k in ("arch", "potential", "seed")}, record(arrays)

    return collect_scores(finetune, runs, columns, root, exclude_untouched, per_layer, candidates)


def collect_scores(stored: Callable, runs: Sequence[dict], columns: Callable[[dict, dict], tuple[dict, dict]],
                   root=None, exclude_untouched: bool = False, per_layer: bool = False,
                   candidates: Sequence[str] = CANDIDATE_POTENTIALS, what: str = "runs") -> pd.DataFrame:
    """:func:`analyse` of every finished run of a stored fine-tuning experiment ``stored`` (called
    as ``stored(params)``), in one table.

    ``columns(params, arrays)`` gives the run's record as two dicts: the columns put first (in
    order) and the columns appended. Runs not yet stored are skipped; none finished is a ValueError.
    """
    frames = []
    for params in runs:
        if not is_done(stored, {"params": params}, root):
            continue
        arrays = stored(params, root=root)
        table = analyse(arrays, candidates, exclude_untouched, per_layer)
        first, rest = columns(params, arrays)
        for i, (name, value) in enumerate(first.items()):
            table.insert(i, name, value)
        for name, value in rest.items():
            table[name] = value
        frames.append(table)
    if not frames:
        raise ValueError(f"no finished {what} to collect; run the sweeps first")
    return pd.concat(frames, ignore_index=True)


def inferred(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer): the inferred potential (lowest Delta-CDF) and whether it is the trained one."""
    best = scores[scores["rank"] == 1].rename(columns={"candidate": "inferred"})
    best = best.drop(columns=["rank"]).reset_index(drop=True)
    best["correct"] = best["inferred"] == best["potential"]
    return best
