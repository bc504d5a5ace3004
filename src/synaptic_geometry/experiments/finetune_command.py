"""``synaptic-geometry finetune ARCH --potential P --seed S``: rerun (or load) one finetuning run.

The run uses the deep-network chapter's protocol at a profile (its pretraining, grid, epochs and
the named protocol's learning-rate rule), in the same store as the book at that profile, so a
run the book made is loaded, not recomputed. It prints the run's record and the Delta-CDF under
every candidate potential for each statistic (raw and row/column-corrected), beside each
statistic's null. Every argument is checked before anything is computed or written: bad input
gets a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from synaptic_geometry.book.build import PROFILES, PipelineError, load_profile
from synaptic_geometry.experiments import deep_analysis as da
from synaptic_geometry.experiments import finetune as ft
from synaptic_geometry.experiments import models
from synaptic_geometry.infra import store

CHAPTER = "deep_networks"


class UsageError(ValueError):
    """Bad command-line input (exit status 2)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synaptic-geometry finetune",
                                description="Run or load one finetuning run of the deep-network chapter and print "
                                            "its record and its Delta-CDF under every candidate potential.")
    p.add_argument("arch", help=f"architecture pretrained here: {', '.join(models.ARCHITECTURES)}")
    p.add_argument("--potential", required=True, help="trained potential, e.g. 2-norm, negative_entropy, 3-norm")
    p.add_argument("--seed", required=True, type=int, help="seed of the run (non-negative integer)")
    p.add_argument("--profile", default="default", help=f"profile whose protocol is used: {', '.join(PROFILES)}")
    p.add_argument("--protocol", default=None, help="protocol of the profile (default: small-change, else the first)")
    p.add_argument("--results", default=None, help="store folder (default: the book's results/<profile>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def resolve(arch: str, potential: str, seed: int, profile: str, protocol: str | None) -> tuple[dict, dict, str]:
    """(run parameters, profile settings, protocol name), or a UsageError saying what is wrong."""
    if arch not in models.ARCHITECTURES:
        raise UsageError(f"unknown architecture {arch!r}; known (pretrained here): {', '.join(models.ARCHITECTURES)}")
    try:
        potential = ft.check_potential(potential)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if seed < 0:
        raise UsageError(f"seed must be a non-negative integer; got {seed}")
    try:
        settings = load_profile(CHAPTER, profile)
    except PipelineError as error:
        raise UsageError(str(error)) from None
    protocols = settings["protocols"]
    if protocol is None:
        protocol = "small-change" if "small-change" in protocols else next(iter(protocols))
    if protocol not in protocols:
        raise UsageError(f"unknown protocol {protocol!r} at profile {profile}; known: {', '.join(protocols)}")
    shared = {k: settings[k] for k in ("lr_grid", "epochs", "extra_epochs", "max_extensions", "batch_size")}
    try:
        (params,) = da.chapter_plan([arch], [potential], [seed], settings["pretraining"],
                                    {protocol: protocols[protocol]}, dataset=settings["dataset"],
                                    data_root=settings.get("data_root"), **shared)
    except ValueError as error:
        raise UsageError(str(error)) from None
    ok, why = ft.availability(params["pretraining"])
    if not ok:
        raise UsageError(f"{arch} cannot run here: {why}")
    return params, settings, protocol


def report(params: dict, settings: dict, protocol: str, root: Path) -> dict:
    """Run (or load) the run and score it; the printable result as a plain dict."""
    arrays = ft.finetune(params, root=root)
    table = da.run_scores(params, floor_samples=int(settings.get("floor_samples", 10)), root=root)
    pooled = [str(g) for g in table["groups"]].index("pooled")
    candidates = [str(c) for c in table["candidates"]]

    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {"arch": params["arch"], "potential": params["potential"], "seed": params["seed"], "protocol": protocol,
            "from_store": bool(arrays.from_store), "record": {k: clean(v) for k, v in ft.record(arrays).items()},
            "n_weights": int(table["n_weights"][pooled]),
            "statistics": {stat: {"delta_cdf": dict(zip(candidates, map(float, table[f"{stat}/delta_cdf"][pooled]))),
                                  "floor_median": float(table[f"{stat}/floor_median"][pooled]),
                                  "floor_q95": float(table[f"{stat}/floor_q95"][pooled])}
                           for stat in da.STATISTICS}}


def format_text(result: dict) -> str:
    lines = [f"{result['arch']} trained with {result['potential']}, seed {result['seed']}, protocol "
             f"{result['protocol']} ({'loaded from the store' if result['from_store'] else 'computed'})", "", "record:"]
    lines += [f"  {k:<22} {v}" for k, v in result["record"].items()]
    stats = result["statistics"]
    lines += ["", f"Delta-CDF over {result['n_weights']} analysed weights (pooled; lowest = inferred):",
              f"  {'candidate':<18}" + "".join(f"{s:>12}" for s in stats)]
    for candidate in stats["raw"]["delta_cdf"]:
        marks = "".join(f"{stats[s]['delta_cdf'][candidate]:>12.4f}" for s in stats)
        lines.append(f"  {candidate:<18}{marks}" + ("   <- trained" if candidate == result["potential"] else ""))
    lines.append(f"  {'Gaussian floor':<18}" + "".join(f"{stats[s]['floor_median']:>12.4f}" for s in stats)
                 + "   (median of Gaussian samples of the same size, scored the same way)")
    for s in stats:
        inferred = min(stats[s]["delta_cdf"], key=stats[s]["delta_cdf"].get)
        lines.append(f"  {s}: inferred {inferred} ({'correct' if inferred == result['potential'] else 'wrong'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        params, settings, protocol = resolve(args.arch, args.potential, args.seed, args.profile, args.protocol)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = Path(args.results) if args.results else store.default_root(args.profile)
    result = report(params, settings, protocol, root)
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
