"""Pruning and attention-entropy scaling side by side on a repair map, held out.

For each resolution of a map (``map.csv`` from ``crdiff map``: the searched pruning ratios per
resolution), the study's model is scored on the same held-out prompts and seeds as the map's
verdict, four ways: dense, entropy scaling alone, the map's pruning alone (its winner's ratios,
no POA), and the same ratios with entropy scaling on (not searched again). Studies searched
with ``search.repair = "prune+entropy"`` can be added (``--searched``): their best trial's
ratios, with entropy scaling. Every method gets its paired difference from dense with a 95 %
bootstrap interval and a Wilcoxon p; "pruned + entropy" also against pruning alone (do they
add up?). A resolution already in the output table gets only its missing rows: adding a
``--searched`` study scores the dense model, pruning alone and the searched ratios again, not
the four methods.

Run (about 30 minutes on 2 CPU cores for the testbed's 8 resolutions)::

    python -m crdiff_search.analysis.repair_methods docs/repair-map/map.csv --out docs/repair-methods
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd

from crdiff_search.errors import UsageError

METHODS = ("dense", "entropy", "pruned", "pruned+entropy")
SEARCHED = "searched+entropy"
TABLE_CSV = "methods.csv"
FIGURE = "methods.png"
REPORT = "methods.md"


def _searched_ratios(folder: Path, groups: Sequence[str], mode: str) -> dict[str, float]:
    """The best completed trial of a ``prune+entropy`` study (its search pick)."""
    from crdiff_search import records
    from crdiff_search.rerank import load_study

    config, _, trials = load_study(folder)
    if config.search.attention_scaling != "entropy":
        raise UsageError(f"{folder}: search.repair is {config.search.repair!r}, not prune+entropy")
    done = records.ranked_completed(trials, mode)
    if done.empty:
        raise UsageError(f"{folder}: no completed trial")
    return records.ratios_of(done.iloc[0].to_dict(), groups)


def measure_resolution(
    row: dict,
    *,
    experiment: str | None = None,
    n_prompts: int | None = None,
    searched: Path | None = None,
    only: Collection[str] | None = None,
    log=print,
) -> list[dict]:
    """The methods at one resolution of the map (those in ``only`` when given), one row each;
    the dense model and pruning alone are scored as references either way."""
    from crdiff_search.analysis.heldout import HeldOut

    resolution = str(row["resolution"]).replace(" (R)", "")
    held = HeldOut.at(resolution, experiment=experiment, n_prompts=n_prompts)
    groups = list(held.groups)
    ratios = {g: float(row[g]) for g in groups}
    zeros = dict.fromkeys(groups, 0.0)
    methods = {  # name: (ratios, attention scaling)
        "dense": (zeros, None),
        "entropy": (zeros, "entropy"),
        "pruned": (ratios, None),
        "pruned+entropy": (ratios, "entropy"),
    }
    if searched is not None:
        found = _searched_ratios(searched, groups, held.config.objective.mode)
        methods[SEARCHED] = (found, "entropy")
    out = []
    for method, (used, scaling) in methods.items():
        if only is not None and method not in only:
            continue
        score = held.score(used, attention_scaling=scaling)
        seconds = held.seconds[held.key(used, attention_scaling=scaling)]
        out.append(
            {
                "resolution": resolution,
                "method": method,
                "score": score,
                **{f"ratio.{g}": used[g] for g in groups},
                "n_prompts": len(held.prompts),
                "heldout_seed": held.seeds[0],
                "seconds": seconds,
            }
        )
        log(f"  {resolution} {method:>16}: {score:.4f} ({seconds} s)")
        if method == "dense":
            continue
        d = held.versus(used, attention_scaling=scaling)
        out[-1].update(
            delta=d["delta"],
            delta_low=d["ci_low"],
            delta_high=d["ci_high"],
            p=d["p"],
            wins=d["wins"],
            ties=d["ties"],
            losses=d["losses"],
        )
        if method in ("pruned+entropy", SEARCHED):
            g = held.versus(used, attention_scaling=scaling, reference=held.scores(ratios))
            out[-1].update(
                vs_pruned=g["delta"], vs_pruned_low=g["ci_low"], vs_pruned_high=g["ci_high"]
            )
    return out


def verdict(row: pd.Series) -> str:
    """``helps`` / ``hurts``: the 95 % bootstrap interval excludes zero and the Wilcoxon test
    agrees (p < 0.05); ``suggestive``: the interval alone excludes zero (discrete scores with
    many ties make the two disagree); else ``no difference``."""
    if row["method"] == "dense":
        return ""
    if row["delta_low"] > 0 or row["delta_high"] < 0:
        if row["p"] < 0.05:
            return "helps" if row["delta_low"] > 0 else "hurts"
        return "suggestive"
    return "no difference"


def format_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| resolution | method | held-out score | vs dense [95 % CI] | p | better / equal / worse "
        "| vs pruning alone [95 % CI] | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        if r["method"] == "dense":
            lines.append(f"| {r['resolution']} | dense | {r['score']:.3f} | | | | | |")
            continue
        vs = (
            f"{r['vs_pruned']:+.3f} [{r['vs_pruned_low']:+.3f}, {r['vs_pruned_high']:+.3f}]"
            if pd.notna(r.get("vs_pruned"))
            else ""
        )
        lines.append(
            f"| {r['resolution']} | {r['method']} | {r['score']:.3f} | {r['delta']:+.3f} "
            f"[{r['delta_low']:+.3f}, {r['delta_high']:+.3f}] | {r['p']:.2g} | "
            f"{int(r['wins'])} / {int(r['ties'])} / {int(r['losses'])} | {vs} | {verdict(r)} |"
        )
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, title: str = ""):
    from crdiff_search.analysis.plots import delta_bars

    return delta_bars(
        table,
        key="method",
        series={
            "entropy": ("entropy scaling alone", "#4c72b0"),
            "pruned": ("pruning alone (the map's ratios)", "#dd8452"),
            "pruned+entropy": ("the same ratios + entropy scaling", "#55a868"),
            SEARCHED: ("pruning searched with entropy scaling on", "#8172b3"),
        },
        title=title or "Repair methods against the dense model, held out",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crdiff_search.analysis.repair_methods", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("map_csv", help="map.csv of `crdiff map` (ratios per resolution)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--experiment", default=None, help="the map's experiment file (default: testbed)"
    )
    parser.add_argument("--resolutions", default="", help="comma-separated subset (default: all)")
    parser.add_argument(
        "--prompts", type=int, default=None, help="held-out prompts (default: the study's)"
    )
    parser.add_argument(
        "--searched",
        nargs="*",
        default=[],
        metavar="STUDY",
        help="folders of studies searched with search.repair = prune+entropy (one per resolution)",
    )
    args = parser.parse_args(argv)
    path = Path(args.map_csv)
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (the map.csv of `crdiff map`)")
    rows = pd.read_csv(path).to_dict("records")
    wanted = [r for r in args.resolutions.split(",") if r]
    known = [str(r["resolution"]).replace(" (R)", "") for r in rows]
    bad = [r for r in wanted if r not in known]
    if bad:
        raise SystemExit(f"error: resolutions {bad} are not in {path}; it has {', '.join(known)}")
    from crdiff_search.rerank import load_study

    searched = {load_study(folder)[0].resolution: folder for folder in map(Path, args.searched)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / TABLE_CSV
    done = pd.read_csv(table_path) if table_path.is_file() else pd.DataFrame()
    frames = [done] if not done.empty else []
    for row, res in zip(rows, known, strict=True):
        if wanted and res not in wanted:
            continue
        have = set(done["method"][done["resolution"] == res]) if not done.empty else set()
        need = (set(METHODS) | ({SEARCHED} if res in searched else set())) - have
        if not need:
            print(f"{res}: already measured", file=sys.stderr)
            continue
        print(f"{res}: {', '.join(sorted(need))}", file=sys.stderr)
        measured = pd.DataFrame(
            measure_resolution(
                row,
                experiment=args.experiment,
                n_prompts=args.prompts,
                searched=searched.get(res),
                only=need,
                log=lambda s: print(s, file=sys.stderr),
            )
        )
        drop = [(f["resolution"] == res) & f["method"].isin(need) for f in frames]
        frames = [f[~d] for f, d in zip(frames, drop, strict=True)] + [measured]
        pd.concat(frames, ignore_index=True).to_csv(table_path, index=False, float_format="%.6g")
    table = pd.concat(frames, ignore_index=True)
    order = {r: i for i, r in enumerate(known)}
    table = table.sort_values(
        ["resolution", "method"],
        key=lambda s: (
            s.map(order)
            if s.name == "resolution"
            else s.map({m: i for i, m in enumerate((*METHODS, SEARCHED))})
        ),
    ).reset_index(drop=True)
    table.to_csv(table_path, index=False, float_format="%.6g")
    from crdiff_search.analysis.plots import save_png

    save_png(figure(table), out / FIGURE)
    (out / REPORT).write_text(format_markdown(table), encoding="utf-8")
    sys.stdout.write(format_markdown(table))
    print(f"saved: {table_path}, {out / FIGURE}, {out / REPORT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
