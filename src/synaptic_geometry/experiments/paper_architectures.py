"""The paper's architectures chapter: SimSiam's sweeps, one table layout for every network, verdicts.

The supervised networks (ResNet-18, ShuffleNetV2 x0.5, CORnet-RT, CORnet-S) run through the
deep-network protocol unchanged (:mod:`synaptic_geometry.experiments.finetune`: ``plan``,
``run_all``, ``collect``). SimSiam runs through the same sweep runner and store, in three sweeps:
its pretraining, every (potential, seed, rate) of the grid once (:func:`simsiam.finetune_at_rate`;
the learning-rate rules share them), then the runs of each rule, which only choose. Its scores
are computed by the same :func:`finetune.analyse` and laid out like :func:`finetune.collect`'s,
so one identification matrix, one run table and one verdict table cover all the networks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import simsiam
from synaptic_geometry.infra.sweep import is_done, run_sweep
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS, TRAINED_POTENTIALS, display_name

SIMSIAM = "simsiam"  # the architecture label of SimSiam's runs on the digits in the chapter's tables
SIMSIAM_IMAGENET = "simsiam-resnet50"  # and of the paper's SimSiam ResNet-50 on an ImageNet folder
LABELS = {"resnet18-digits": "ResNet-18", "shufflenet-x0.5-digits": "ShuffleNetV2 x0.5", "cornet-rt": "CORnet-RT",
          "cornet-s": "CORnet-S", SIMSIAM: "SimSiam (ResNet-10)",
          SIMSIAM_IMAGENET: "SimSiam ResNet-50 (ImageNet)", "resnet18-tiny": "ResNet-18 (tiny)",
          "shufflenet-tiny": "ShuffleNetV2 (tiny)", "cornet-rt-tiny": "CORnet-RT (tiny)",
          "cornet-s-tiny": "CORnet-S (tiny)", "resnet18": "ResNet-18 (ImageNet)",
          "shufflenet_v2_x0_5": "ShuffleNetV2 x0.5 (ImageNet)", "cornet_rt": "CORnet-RT (ImageNet)",
          "cornet_s": "CORnet-S (ImageNet)"}
RULE_LABELS = {"lowest_loss": "published (lowest loss)", "smallest_reaching_100": "small change (smallest at 100%)",
               "smallest_near_best": "small change (smallest near best)",
               "smallest_converged": "small change (smallest closing the gap)"}
# Columns every run row carries, for both kinds of network (``fits``: reached 100% training
# accuracy for a supervised run; closed the rule's share of the loss gap for SimSiam).
RECORD = ("arch", "potential", "seed", "lr_rule", "dim", "n_samples", "lr", "lr_at_grid_end", "epochs",
          "relative_change", "fraction_crossed_zero", "fits")


def label(arch: str) -> str:
    return LABELS.get(arch, arch)


# ---------------------------------------------------------------------------------------------
# SimSiam through the sweep runner


def simsiam_plan(pretraining: dict, potentials: Sequence[str], seeds: Sequence[int], lr_rules: Sequence[str],
                 **options) -> list[dict]:
    """Parameters of every SimSiam finetuning run, rule-major (options go to :func:`simsiam.finetune_params`)."""
    return [simsiam.finetune_params(p, s, pretraining, lr_rule=rule, **options)
            for rule in lr_rules for p in potentials for s in seeds]


def rate_runs(runs: Sequence[dict]) -> list[dict]:
    """The distinct single-rate runs the SimSiam runs certainly need (each rule's grid, shared across
    rules; a bracketed run stops early, so its rates are computed by the run itself)."""
    unique = {}
    for run in runs:
        if run.get("bracket"):
            continue
        shared = {k: run[k] for k in simsiam.RATE_KEYS}
        for lr in run["lr_grid"]:
            params = {**shared, "lr": lr}
            unique.setdefault(json.dumps(params, sort_keys=True), params)
    return list(unique.values())


def run_simsiam(runs: Sequence[dict], root=None, executor: str = "local", workers: int = 1, threads: int | None = 1,
                progress: bool = False, cluster: str | None = None):
    """Pretrain (digits only), run every rate of the grids, then each rule's runs; returns the sweeps' results."""
    pretrainings = {json.dumps(r["pretraining"], sort_keys=True): r["pretraining"] for r in runs
                    if r["pretraining"]["source"] == "embedded"}
    options = dict(root=root, executor=executor, workers=workers, threads=threads, progress=progress, cluster=cluster)
    first = run_sweep(simsiam.pretrain, [{"params": p} for p in pretrainings.values()],
                      label_keys=["backbone", "width"], **options)
    second = run_sweep(simsiam.finetune_at_rate, [{"params": r} for r in rate_runs(runs)],
                       label_keys=["potential", "seed", "lr"], **options)
    rules = list(dict.fromkeys(r["lr_rule"] for r in runs))  # one sweep per rule, so later rules find the rates stored
    third = [run_sweep(simsiam.finetune, [{"params": r} for r in runs if r["lr_rule"] == rule],
                       label_keys=["potential", "seed", "lr_rule"], **options) for rule in rules]
    return (first, second, *third)


# ---------------------------------------------------------------------------------------------
# The supervised small-change runs, planned from the published runs


SEARCH_SHARED = ("lr_grid", "extra_epochs", "max_extensions", "batch_size", "momentum", "n_samples", "zero_policy")


def small_change_plan(published: Sequence[dict], epochs: int, root=None) -> list[dict]:
    """The small-change twin of each finished published run (same grid, batch and data): the smallest
    rate that reaches 100% training accuracy within ``epochs``, each training stopped at the first
    epoch at 100%, the search bracketed and started at the rate the published run chose."""
    runs = []
    for run in published:
        if run["lr_rule"] != "lowest_loss":
            raise ValueError(f"small-change twins are planned from published (lowest_loss) runs; got {run['lr_rule']!r}")
        if not is_done(ft.finetune, {"params": run}, root):
            raise ValueError(f"published run {run['arch']} {run['potential']} seed {run['seed']} is not stored yet")
        start = float(ft.finetune(run, root=root)["lr"])
        runs.append(ft.run_params(run["arch"], run["potential"], run["seed"], run["pretraining"], epochs=epochs,
                                  lr_rule="smallest_reaching_100", stop_at_100=True, bracket=True, start_lr=start,
                                  **{k: run[k] for k in SEARCH_SHARED}))
    return runs


def collect_simsiam(runs: Sequence[dict], root=None, exclude_untouched: bool = True, per_layer: bool = False,
                    candidates: Sequence[str] = CANDIDATE_POTENTIALS) -> pd.DataFrame:
    """Scores of every finished SimSiam run, in the layout of :func:`finetune.collect` (``arch``:
    :data:`SIMSIAM` on the digits, :data:`SIMSIAM_IMAGENET` from the paper's checkpoint)."""
    def columns(params: dict, arrays: dict) -> tuple[dict, dict]:
        arch = SIMSIAM if params["pretraining"]["source"] == "embedded" else SIMSIAM_IMAGENET
        first = {"arch": arch, "potential": params["potential"], "seed": params["seed"], "lr_rule": params["lr_rule"]}
        rest = {"dim": int(arrays["dim"]), "n_samples": int(arrays["n_samples"]), "lr": float(arrays["lr"]),
                "lr_at_grid_end": bool(arrays["lr_at_grid_end"]), "epochs": int(arrays["epochs"]),
                "relative_change": float(arrays["relative_change"]),
                "fraction_crossed_zero": float(arrays["fraction_crossed_zero"]), "fits": bool(arrays["converged"]),
                "gap_closed": float(arrays["gap_closed"]), "std_after": float(arrays["std_after"])}
        return first, rest

    return ft.collect_scores(simsiam.finetune, runs, columns, root, exclude_untouched, per_layer, candidates,
                             what="SimSiam runs")


def supervised_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """Supervised scores from :func:`finetune.collect` with the shared columns (``fits`` = reached 100%)."""
    return scores.assign(fits=scores["reached_100"].astype(bool))


# ---------------------------------------------------------------------------------------------
# Tables and figures


def inferred(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per run (pooled analysis): the lowest-Delta-CDF candidate, and whether it is the trained one."""
    return ft.inferred(scores[scores["layer"] == "pooled"] if "layer" in scores else scores)


def run_table(best: pd.DataFrame) -> pd.DataFrame:
    """The record of every run, for the reader: network, rule, potentials, rate and how far the weights
    moved (each network's D and N are in the networks' table, and a single seed in the parameters'
    table, not repeated here)."""
    dropped = ("dim", "n_samples") + (("seed",) if best["seed"].nunique() == 1 else ())
    table = best[[c for c in RECORD if c not in dropped] + ["inferred", "delta_cdf"]].copy()
    table["arch"] = table["arch"].map(label)
    table["lr_rule"] = table["lr_rule"].map(lambda r: RULE_LABELS.get(r, r))
    for column in ("potential", "inferred"):
        table[column] = table[column].map(display_name)
    return table.rename(columns={
        "arch": "network", "lr_rule": "rule", "potential": "trained", "inferred": "inferred",
        "delta_cdf": "Delta-CDF", "lr": "rate", "lr_at_grid_end": "at grid end",
        "relative_change": "relative change", "fraction_crossed_zero": "crossed zero", "fits": "fit"})


def grid_end_runs(best: pd.DataFrame) -> pd.DataFrame:
    """The runs whose chosen rate sat at an end of the grid (their search is not finished), for the reader."""
    flagged = best[best["lr_at_grid_end"].astype(bool)]
    return pd.DataFrame({"network": flagged["arch"].map(label),
                         "rule": flagged["lr_rule"].map(lambda r: RULE_LABELS.get(r, r)),
                         "trained": flagged["potential"].map(display_name), "rate": flagged["lr"].astype(float)}
                        ).reset_index(drop=True)


def verdict(correct: int, runs: int) -> str:
    """Which runs of an (architecture, rule) cell were identified: every run, some runs, or none."""
    if runs < 1 or not 0 <= correct <= runs:
        raise ValueError(f"need 0 <= correct <= runs and runs >= 1; got {correct} of {runs}")
    if correct == runs:
        return "every run"
    return "none" if correct == 0 else "some runs"


def verdict_table(best: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per network and learning-rate rule: runs identified, the median relative change and share of
    weights that crossed zero, rates at the grid's end, runs that fit their data, and a verdict."""
    rows = []
    for (arch, rule), group in best.groupby(["arch", "lr_rule"], sort=False):
        correct, runs = int(group["correct"].sum()), len(group)
        rows.append({"network": label(arch), "rule": RULE_LABELS.get(rule, rule),
                     "identified": f"{correct} of {runs}",
                     "relative change": float(group["relative_change"].median()),
                     "crossed zero": float(group["fraction_crossed_zero"].median()),
                     "at grid end": f"{int(group['lr_at_grid_end'].sum())} of {runs}",
                     "fit": f"{int(group['fits'].sum())} of {runs}",
                     "verdict": verdict(correct, runs), "_arch": arch})
    table = pd.DataFrame(rows)
    if order is not None:
        rank = {a: i for i, a in enumerate(order)}
        table = table.sort_values("_arch", key=lambda s: s.map(rank), kind="stable")
    return table.drop(columns="_arch").reset_index(drop=True)


def plot_identification_matrices(best: pd.DataFrame, architectures: Sequence[str], rules: Sequence[Sequence[str]],
                                 trained: Sequence[str] = TRAINED_POTENTIALS,
                                 candidates: Sequence[str] = CANDIDATE_POTENTIALS) -> plt.Figure:
    """One heatmap of run counts (trained potential x lowest-Delta-CDF potential) per network (rows)
    and learning-rate rule (columns; ``rules[i]`` lists the rules of row i, published first)."""
    n_cols = max(len(r) for r in rules)
    fig, axes = plt.subplots(len(architectures), n_cols, figsize=(4.6 * n_cols, 2.5 * len(architectures)),
                             squeeze=False, constrained_layout=True)
    top = max(1, int(best.groupby(["arch", "lr_rule", "potential"]).size().max())) if len(best) else 1
    for row, (arch, arch_rules) in enumerate(zip(architectures, rules)):
        for col in range(n_cols):
            ax = axes[row, col]
            if col >= len(arch_rules):
                ax.axis("off")
                continue
            rule = arch_rules[col]
            runs = best[(best["arch"] == arch) & (best["lr_rule"] == rule)]
            matrix = ft.identification_matrix(runs, trained=trained, candidates=candidates) if len(runs) else \
                pd.DataFrame(0, index=list(trained), columns=list(candidates))
            sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", vmin=0, vmax=top, cbar=False, ax=ax,
                        linewidths=0.5, linecolor="white")
            for i, potential in enumerate(trained):  # outline the correct cell of each row
                if potential in candidates:
                    ax.add_patch(plt.Rectangle((list(candidates).index(potential), i), 1, 1, fill=False,
                                               edgecolor="black", lw=1.5))
            ax.set_xticklabels([display_name(c) for c in candidates], rotation=30, ha="right", fontsize=8)
            ax.set_yticklabels([display_name(t) for t in trained], rotation=0, fontsize=8)
            ax.set_title(f"{label(arch)}\n{RULE_LABELS.get(rule, rule)}", fontsize=9)
            ax.set_xlabel("lowest Delta-CDF" if row == len(architectures) - 1 else "")
            ax.set_ylabel("trained" if col == 0 else "")
    return fig


def matched_over_floor(scores: pd.DataFrame, floor: pd.Series) -> pd.DataFrame:
    """Delta-CDF under the trained potential divided by the Gaussian floor of the same number of weights.

    ``floor`` maps a number of analysed weights to the Delta-CDF of a Gaussian sample of that size
    (:func:`synaptic_geometry.gaussianity.gaussian_floor`); 1 means as Gaussian as a Gaussian sample.
    """
    matched = scores[(scores["candidate"] == scores["potential"]) & (scores.get("layer", "pooled") == "pooled")].copy()
    missing = set(matched["n_weights"]) - set(floor.index)
    if missing:
        raise ValueError(f"no Gaussian floor for sample sizes {sorted(missing)}")
    matched["floor"] = matched["n_weights"].map(floor)
    matched["ratio"] = matched["delta_cdf"] / matched["floor"]
    return matched


def skipped_table(notes: dict[str, tuple[bool, str]]) -> pd.DataFrame:
    """What the ImageNet (paper-profile) part would run, and whether it ran here or why not."""
    return pd.DataFrame([{"network": label(name), "runs here": "yes" if ok else "no", "reason": why}
                         for name, (ok, why) in notes.items()])


def _check_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"missing columns {missing}")


def combine(supervised: pd.DataFrame | None, ssl: pd.DataFrame | None) -> pd.DataFrame:
    """Supervised and SimSiam scores in one frame with the shared :data:`RECORD` columns."""
    frames = [f for f in (supervised_rows(supervised) if supervised is not None else None, ssl) if f is not None]
    if not frames:
        raise ValueError("nothing to combine")
    for frame in frames:
        _check_columns(frame, RECORD)
    return pd.concat(frames, ignore_index=True, sort=False)

