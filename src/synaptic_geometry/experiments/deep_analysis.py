"""The deep-network chapter's plan and analysis: protocols side by side, two statistics, verdicts.

The runs themselves are :mod:`synaptic_geometry.experiments.finetune`'s; this module (which
finetune does not import, so editing it never invalidates a stored run) decides which runs the
chapter makes (:func:`chapter_plan`) and turns stored runs into the chapter's tables:

* :func:`scores`: the Delta-CDF of every run under every candidate potential, for each statistic
  (``raw``: the published pooled Delta-CDF; ``corrected``: the row/column-corrected one of
  :mod:`synaptic_geometry.scale_correction`), pooled over layers or per layer, each beside its
  null (the same statistic of Gaussian layers of the same size, shapes and masks);
* :func:`outcomes`: one row per (run, statistic, layer): the inferred potential, whether it is the
  trained one, the margin to the runner-up, the run's record;
* :func:`verdicts`: the closing table per architecture, protocol and statistic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import models
from synaptic_geometry.gaussianity import domain_mask, gaussian_floor, identify
from synaptic_geometry.infra.store import experiment
from synaptic_geometry.infra.sweep import SweepResult, is_done, run_sweep
from synaptic_geometry.potentials import CANDIDATE_POTENTIALS
from synaptic_geometry.scale_correction import corrected_gaussian_floor, corrected_reference, identify_corrected

STATISTICS = ("raw", "corrected")

VERDICTS = ("holds", "partly", "fails")


# ---------------------------------------------------------------------------------------------
# The plan


def chapter_plan(architectures: Sequence[str], potentials: Sequence[str], seeds: Iterable[int],
                 pretraining: Mapping[str, Mapping], protocols: Mapping[str, Mapping], dataset: str = "mnist-embedded",
                 data_root: str | None = None, pretraining_default: str = "mlp",
                 finetuning_images: Mapping[str, int] | None = None, **run_options) -> list[dict]:
    """Run parameters of every (protocol, architecture, potential, seed), protocol-major.

    ``pretraining`` maps an architecture to keyword arguments of :func:`finetune.pretrain_params`;
    an architecture without an entry (the width sweep's perceptrons) uses ``pretraining_default``'s.
    ``protocols`` maps a protocol name to the run options that define it (e.g. ``lr_rule``); the
    other ``run_options`` are shared. Every protocol uses the same pretrained networks and seeds.
    ``finetuning_images`` maps an architecture to its number of finetuning images N where that is
    not floor(sqrt(D)); the other architectures keep floor(sqrt(D)) and their keys.
    """
    finetuning_images = dict(finetuning_images or {})
    stray = set(finetuning_images) - set(architectures)
    if stray:
        raise ValueError(f"finetuning_images names architectures that are not planned: {sorted(stray)}")
    if not protocols:
        raise ValueError("protocols must name at least one protocol, e.g. {'small-change': "
                         "{'lr_rule': 'smallest_reaching_100'}}")
    runs = []
    for name, options in protocols.items():
        unknown = set(options) - {"lr_rule", "epochs", "extra_epochs", "max_extensions", "batch_size", "lr_grid"}
        if unknown:
            raise ValueError(f"protocol {name!r}: unknown option(s) {sorted(unknown)}")
        pre = {}
        for arch in architectures:
            if models.is_torchvision(arch):
                raise ValueError(f"{arch}: the chapter's plan covers networks pretrained here")
            settings = pretraining.get(arch, pretraining.get(pretraining_default))
            if settings is None:
                raise ValueError(f"no pretraining settings for {arch!r} (nor for {pretraining_default!r})")
            pre[arch] = ft.pretrain_params(arch, dataset, data_root=data_root, **settings)
        for arch in architectures:
            sized = {"n_samples": finetuning_images[arch]} if arch in finetuning_images else {}
            runs += ft.plan([arch], potentials, seeds, pre, **{**run_options, **options, **sized})
    return runs


def finetuning_shortfalls(runs: Sequence[Mapping]) -> list[str]:
    """Runs' architectures whose N (floor(sqrt(D)) or the run's ``n_samples``) exceeds the images
    of their finetuning pool, one line each; ImageNet networks (read from a folder) are not checked."""
    pools, dims, lines = {}, {}, {}
    for params in runs:
        pre, arch = params["pretraining"], params["arch"]
        if models.is_torchvision(arch):
            continue
        source = (pre["dataset"], pre["data_root"], pre["pixels"])
        if source not in pools:
            pools[source] = ft.protocol_data(*source)[1]
        pool = pools[source]
        if (arch, source) not in dims:
            dims[arch, source] = models.n_analysed(models.build(arch, pool.shape, pool.n_classes))
        dim = dims[arch, source]
        n = ft.finetuning_count(params["n_samples"], dim)
        if n > len(pool):
            lines[arch, n] = f"{arch}: N = {n} finetuning images (D = {dim}), but the pool of {pre['dataset']!r} holds {len(pool)}"
    return list(lines.values())


def check_finished(sweeps: Iterable[SweepResult]) -> None:
    """Raise if any job of the sweeps failed, naming each failure (the chapter's tables need every run)."""
    failures = [f"{s.name}: {f['label']}: {f['error']}" for s in sweeps for f in s.failures]
    if failures:
        shown = "\n  ".join(failures[:10]) + (f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else "")
        raise RuntimeError(f"{len(failures)} job(s) failed; the chapter needs every run:\n  {shown}")


def protocol_of(params: Mapping, protocols: Mapping[str, Mapping]) -> str:
    """The name of the protocol whose options ``params`` carries (the first that matches)."""
    for name, options in protocols.items():
        if all(params.get(k) == (sorted(v) if k == "lr_grid" else v) for k, v in options.items()):
            return name
    raise ValueError(f"run {params.get('arch')}/{params.get('potential')}/{params.get('seed')} matches no protocol")


# ---------------------------------------------------------------------------------------------
# Scores of one run (cached: the corrected statistic simulates its null)


def _layer_masks(arrays, layers, exclude_untouched: bool, candidates) -> tuple[list, list, list]:
    before, after, masks = [], [], []
    for name in layers:
        b = arrays[f"before/{name}"].astype(np.float64)
        a = arrays[f"after/{name}"].astype(np.float64)
        keep = domain_mask(b, a, candidates).reshape(b.shape)
        if exclude_untouched:
            keep &= arrays[f"touched/{name}"]
        before.append(b), after.append(a), masks.append(keep)
    return before, after, masks


@experiment("deep_scores")
def run_scores(params: dict, exclude_untouched: bool = True, floor_samples: int = 10,
               candidates: tuple = tuple(CANDIDATE_POTENTIALS)) -> dict[str, np.ndarray]:
    """Delta-CDF of one stored run (``params`` of :func:`finetune.run_params`) under every candidate,
    for each statistic, pooled and per layer, with each statistic's null (median and 95th
    percentile of ``floor_samples`` Gaussian samples of the same size, layer shapes and masks; the corrected
    floor is scored against the same simulated corrected-Gaussian reference as the statistic).

    Arrays: ``groups`` ("pooled", then layer names), ``candidates``, ``<statistic>/delta_cdf``
    (group x candidate), ``<statistic>/floor_median`` and ``<statistic>/floor_q95`` (per group),
    ``n_weights`` (per group).
    """
    arrays = ft.finetune(params)
    candidates = list(candidates)
    layers = [str(n) for n in arrays["layers"]]
    groups = [("pooled", layers)] + [(name, [name]) for name in layers]
    out = {stat: np.full((len(groups), len(candidates)), np.nan) for stat in STATISTICS}
    floors = {f"{stat}/floor_{q}": np.full(len(groups), np.nan) for stat in STATISTICS for q in ("median", "q95")}
    n_weights = np.zeros(len(groups), dtype=np.int64)
    for g, (name, members) in enumerate(groups):
        before, after, masks = _layer_masks(arrays, members, exclude_untouched, candidates)
        b = np.concatenate([x[m] for x, m in zip(before, masks)])
        a = np.concatenate([x[m] for x, m in zip(after, masks)])
        n_weights[g] = b.size
        raw = identify(b, a, candidates=candidates)
        out["raw"][g] = raw.set_index("candidate").loc[candidates, "delta_cdf"].to_numpy()
        shapes = [x.shape for x in before]
        reference = corrected_reference(shapes, masks, seed=0)  # the statistic's and its floor's (one simulation)
        corrected = identify_corrected(before, after, candidates, masks=masks, null=reference)
        out["corrected"][g] = corrected.set_index("candidate").loc[candidates, "delta_cdf"].to_numpy()
        raw_null = gaussian_floor(int(b.size), n_samples=floor_samples, seed=g)
        corrected_null = corrected_gaussian_floor(shapes, masks, n_samples=floor_samples, seed=g, null=reference)
        for stat, null in (("raw", raw_null), ("corrected", corrected_null)):
            floors[f"{stat}/floor_median"][g] = np.median(null)
            floors[f"{stat}/floor_q95"][g] = np.quantile(null, 0.95)
    return {"groups": np.asarray([g for g, _ in groups]), "candidates": np.asarray(candidates),
            "n_weights": n_weights, **{f"{s}/delta_cdf": v for s, v in out.items()}, **floors}


def score_all(runs: Sequence[dict], root=None, exclude_untouched: bool = True, floor_samples: int = 10,
              **sweep_options) -> SweepResult:
    """Score every finished run (:func:`run_scores`) as a sweep, in the machine's worker
    processes, so that :func:`scores` afterwards only reads the store. ``sweep_options`` go to
    :func:`~synaptic_geometry.infra.sweep.run_sweep` (executor, workers, threads, progress, cluster)."""
    jobs = [{"params": params, "exclude_untouched": exclude_untouched, "floor_samples": floor_samples}
            for params in runs if ft.is_done(ft.finetune, {"params": params}, root)]
    return run_sweep(run_scores, jobs, root, **sweep_options)


def scores(runs: Sequence[dict], protocols: Mapping[str, Mapping], root=None, exclude_untouched: bool = True,
           floor_samples: int = 10, per_layer: bool = False) -> pd.DataFrame:
    """Long table of every finished run: one row per (run, statistic, group, candidate).

    Columns: protocol, arch, potential, seed, statistic, layer ("pooled" or a weight name),
    candidate, delta_cdf, floor_median, floor_q95, n_weights, and the run's record
    (:data:`finetune.RECORD_FIELDS`). ``per_layer`` selects the per-layer groups instead of the pooled one.
    """
    rows = []
    for params in runs:
        if not ft.is_done(ft.finetune, {"params": params}, root):
            continue
        record = ft.record(ft.finetune(params, root=root))
        table = run_scores(params, exclude_untouched, floor_samples, root=root)
        groups = [str(g) for g in table["groups"]]
        for stat in STATISTICS:
            for g, group in enumerate(groups):
                if (group == "pooled") == per_layer:
                    continue
                for c, candidate in enumerate(table["candidates"]):
                    rows.append({"protocol": protocol_of(params, protocols), "arch": params["arch"],
                                 "potential": params["potential"], "seed": params["seed"], "statistic": stat,
                                 "layer": group, "candidate": str(candidate),
                                 "delta_cdf": float(table[f"{stat}/delta_cdf"][g, c]),
                                 "floor_median": float(table[f"{stat}/floor_median"][g]),
                                 "floor_q95": float(table[f"{stat}/floor_q95"][g]),
                                 "n_weights": int(table["n_weights"][g]), **record})
    if not rows:
        raise ValueError("no finished runs to score; run the sweep first")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Outcomes and verdicts


RUN_KEYS = ["protocol", "arch", "potential", "seed", "statistic", "layer"]


def outcomes(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, statistic, layer): ``inferred`` (lowest Delta-CDF), ``correct``,
    ``trained_delta_cdf`` (under the trained potential), ``margin`` (runner-up's Delta-CDF minus
    the trained potential's when it is identified; the winner's minus the trained one's, negative,
    when it is not), ``floor_ratio`` (trained Delta-CDF over the null's median) and the run's record."""
    rows = []
    for key, group in table.groupby(RUN_KEYS, sort=False):
        group = group.sort_values("delta_cdf", kind="stable")
        trained = group[group["candidate"] == group["potential"]]
        if trained.empty:
            raise ValueError(f"run {key}: the trained potential is not among the candidates")
        trained_value = float(trained["delta_cdf"].iloc[0])
        others = group[group["candidate"] != group["potential"]]["delta_cdf"]
        first = group.iloc[0]
        row = first.drop(labels=["candidate", "delta_cdf"]).to_dict()
        row.update(inferred=first["candidate"], correct=first["candidate"] == first["potential"],
                   trained_delta_cdf=trained_value, margin=float(others.min()) - trained_value,
                   floor_ratio=trained_value / float(first["floor_median"]))
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(n_correct: int, n_runs: int) -> str:
    """``holds`` when every run is identified, ``fails`` when at most a third are, ``partly`` otherwise."""
    if n_runs < 1 or not 0 <= n_correct <= n_runs:
        raise ValueError(f"need 0 <= n_correct <= n_runs and n_runs >= 1; got {n_correct}, {n_runs}")
    if n_correct == n_runs:
        return "holds"
    return "fails" if n_correct <= n_runs / 3 else "partly"


def verdicts(outcome: pd.DataFrame, by: Sequence[str] = ("arch", "protocol", "statistic")) -> pd.DataFrame:
    """The closing table: per group, runs identified, median change magnitude, median trained
    Delta-CDF and median margin to the runner-up (both over the floor), runs whose rate sits at
    the grid's end or that missed 100%, verdict."""
    rows = []
    for key, group in outcome.groupby(list(by), sort=False):
        n, k = len(group), int(group["correct"].sum())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "identified": f"{k} / {n}", "median change": float(group["change_magnitude"].median()),
                     "median Delta-CDF / floor": float(group["floor_ratio"].median()),
                     "median margin / null": float((group["margin"] / group["floor_median"]).median()),
                     "rate at grid end": int(group["lr_at_grid_end"].sum()),
                     "missed 100%": int((~group["reached_100"].astype(bool)).sum()),
                     "verdict": verdict(k, n)})
    return pd.DataFrame(rows)


def counts(outcome: pd.DataFrame, by: Sequence[str] = ("protocol", "statistic")) -> pd.DataFrame:
    """Runs identified per group, as integers (for prose and the verdict)."""
    return (outcome.groupby(list(by))["correct"].agg(identified="sum", runs="size").reset_index()
            .astype({"identified": int, "runs": int}))


def profile_runs(settings: Mapping) -> tuple[list[dict], list[dict]]:
    """(main runs, width-sweep runs) of the chapter for a profile's settings (the parameters of
    ``book/profiles/deep_networks.yml`` at one profile). The width sweep uses the small-change
    protocol (the protocol named ``small-change``, else the last one) and ``width_seeds``."""
    shared = {k: settings[k] for k in ("lr_grid", "epochs", "extra_epochs", "max_extensions", "batch_size")}
    common = dict(pretraining=settings["pretraining"], dataset=settings["dataset"], data_root=settings.get("data_root"))
    main_archs = [a for a in settings["architectures"] if not models.is_torchvision(a)]
    images = dict(settings.get("finetuning_images") or {})
    main = chapter_plan(main_archs, settings["potentials"], settings["seeds"], protocols=settings["protocols"],
                        finetuning_images={a: n for a, n in images.items() if a in main_archs}, **common, **shared)
    widths = list(settings.get("widths") or [])
    sweep = []
    if widths:
        protocols = settings["protocols"]
        name = "small-change" if "small-change" in protocols else list(protocols)[-1]
        sweep = chapter_plan(widths, settings["potentials"], settings["width_seeds"],
                             protocols={name: protocols[name]},
                             finetuning_images={a: n for a, n in images.items() if a in widths}, **common, **shared)
    stray = set(images) - set(main_archs) - set(widths)
    if stray:
        raise ValueError(f"finetuning_images names networks the profile does not run: {sorted(stray)}")
    short = finetuning_shortfalls(main + sweep)
    if short:
        raise ValueError("too few finetuning images (set finetuning_images, or use a larger pool):\n  "
                         + "\n  ".join(short))
    return main, sweep


def record_summary(outcome: pd.DataFrame, by: Sequence[str] = ("arch", "protocol")) -> pd.DataFrame:
    """How far each protocol moved the weights: per group, the median chosen rate, change
    magnitude, relative weight change and fraction of weights that crossed zero, the epochs, and
    how many runs sit at the grid's end or missed 100% training accuracy (one row per run counted once)."""
    runs = outcome.drop_duplicates(subset=[*by, "potential", "seed"])
    rows = []
    for key, group in runs.groupby(list(by), sort=False):
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "runs": len(group),
                     "median rate": float(group["lr"].median()),
                     "median change magnitude": float(group["change_magnitude"].median()),
                     "median relative change": float(group["relative_change"].median()),
                     "median fraction crossed zero": float(group["fraction_crossed_zero"].median()),
                     "max epochs": int(group["epochs"].max()),
                     "rate at grid end": int(group["lr_at_grid_end"].astype(bool).sum()),
                     "missed 100%": int((~group["reached_100"].astype(bool)).sum())})
    return pd.DataFrame(rows)


def identified_fraction(outcome: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Fraction of runs identified and median margin (in units of the null's median) per group."""
    frame = outcome.assign(margin_floor=outcome["margin"] / outcome["floor_median"])
    return (frame.groupby(list(by), sort=False)
            .agg(identified=("correct", "mean"), runs=("correct", "size"), margin=("margin_floor", "median"),
                 change=("change_magnitude", "median"), floor_ratio=("floor_ratio", "median"),
                 dim=("dim", "median"))
            .reset_index())


def width_table(width_outcome: pd.DataFrame) -> pd.DataFrame:
    """The width sweep's table: one row per perceptron (narrowest first) with its number of weights
    and runs, the median change magnitude, and per statistic the fraction identified and the median
    Delta-CDF under the trained potential in units of the null's median."""
    frame = identified_fraction(width_outcome, ["arch", "statistic"])
    wide = frame.pivot(index="arch", columns="statistic", values=["identified", "floor_ratio"])
    first = frame.groupby("arch")[["dim", "runs", "change"]].first()
    table = pd.DataFrame({"network": first.index, "D": first["dim"].astype(int).to_numpy(),
                          "runs": first["runs"].to_numpy(), "change": first["change"].to_numpy()})
    for statistic in [s for s in STATISTICS if s in frame["statistic"].unique()]:
        table[f"{statistic}: identified"] = wide[("identified", statistic)].reindex(first.index).to_numpy()
        table[f"{statistic}: ratio"] = wide[("floor_ratio", statistic)].reindex(first.index).to_numpy()
    return table.sort_values("D").reset_index(drop=True)


def width_trend(width_outcome: pd.DataFrame, statistic: str = "raw") -> dict[str, float]:
    """How the trained potential's Delta-CDF and its null move with width (medians over runs per
    network size D): at the narrowest and widest D, the ratio to the null, and from narrowest to
    widest the factor of the Delta-CDF, of its null, and the D^-1/2 factor a sampling floor predicts
    from the analysed weights' count; ``direction``: whether the ratio "rises" or "falls" with width."""
    frame = width_outcome[width_outcome["statistic"] == statistic]
    by_d = frame.groupby("dim")[["floor_ratio", "trained_delta_cdf", "floor_median", "n_weights"]].median()
    narrow, wide = by_d.iloc[0], by_d.iloc[-1]
    return {"narrowest_d": int(by_d.index[0]), "widest_d": int(by_d.index[-1]),
            "narrowest_ratio": float(narrow["floor_ratio"]), "widest_ratio": float(wide["floor_ratio"]),
            "stat_factor": float(wide["trained_delta_cdf"] / narrow["trained_delta_cdf"]),
            "null_factor": float(wide["floor_median"] / narrow["floor_median"]),
            "sqrt_factor": float(np.sqrt(narrow["n_weights"] / wide["n_weights"])),
            "direction": "rises" if wide["floor_ratio"] > narrow["floor_ratio"] else "falls"}
