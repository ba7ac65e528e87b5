"""Leave one resolution out: is an interpolated recipe better than the nearest one?

The registry of a map holds the recipes of its *repaired* resolutions (``crdiff export``
refuses null results). For each resolution of the map, that resolution's recipe is taken out
and predicted from the others two ways: the nearest registered recipe (today's fallback) and
:func:`~crdiff_search.interpolate.interpolate_recipe` (the training size as a dense anchor).
Both, the resolution's own searched recipe (the map's winner) and the dense model are scored
on the map's held-out prompts and seeds, paired.

Run (about 30 minutes on 2 CPU cores for the testbed's 8 resolutions)::

    python -m crdiff_search.analysis.interpolation_loo docs/repair-map/map.csv --out docs/interpolation
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

VARIANTS = ("dense", "own", "nearest", "interpolated")
TABLE_CSV = "loo.csv"
REPORT = "loo.md"
FIGURE = "loo.png"


def map_recipes(rows: Sequence[dict], *, model: str = "testbed") -> dict[str, object]:
    """The recipes a registry of the map would hold: one per repaired resolution."""
    from crdiff_search.recipe import Recipe

    out = {}
    for row in rows:
        if row["verdict"] != "repaired":
            continue
        res = str(row["resolution"]).replace(" (R)", "")
        w, h = (int(v) for v in res.split("x"))
        out[res] = Recipe(
            model=model,
            width=w,
            height=h,
            ratios={g: float(row[g]) for g in ("down", "mid", "up")},
            poa_w=float(row["winner_w"]),
            objective="scene",
        )
    return out


def predictions(target: str, registered: dict, training) -> dict[str, object]:
    """The nearest and the interpolated recipe at ``target`` from ``registered`` (target
    left out)."""
    from crdiff_search.interpolate import interpolate_recipe
    from crdiff_search.registry import nearest_resolution
    from crdiff_search.resolution import format_resolution, parse_resolution

    others = {r: rec for r, rec in registered.items() if r != target}
    near = others[format_resolution(*nearest_resolution(target, list(others)))]
    tw, th = parse_resolution(target)
    return {
        "nearest": near.replace(width=tw, height=th),
        "interpolated": interpolate_recipe((tw, th), list(others.values()), training=training),
    }


def measure(row: dict, registered: dict, *, training, n_prompts=None, log=print) -> list[dict]:
    from crdiff_search.analysis.heldout import HeldOut

    res = str(row["resolution"]).replace(" (R)", "")
    held = HeldOut.at(res, n_prompts=n_prompts)
    own = {g: float(row[g]) for g in ("down", "mid", "up")}
    recipes = predictions(res, registered, training)
    variants = {
        "dense": (dict.fromkeys(own, 0.0), 1.0),
        "own": (own, float(row["winner_w"])),
        **{k: (dict(r.ratios), r.poa_w) for k, r in recipes.items()},
    }
    out = []
    for name, (ratios, w) in variants.items():
        score = held.score(ratios, w=w)
        seconds = held.seconds[held.key(ratios, w=w)]
        out.append(
            {
                "resolution": res,
                "variant": name,
                "score": score,
                "poa_w": w,
                **{f"ratio.{g}": ratios[g] for g in own},
                "source": recipes[name].trial_id if name in recipes else "",
                "n_prompts": len(held.prompts),
                "seconds": seconds,
            }
        )
        log(f"  {res} {name:>12}: {score:.4f} (w={w:g}, {seconds} s)")
    references = {  # each variant against these
        "own": ("dense",),
        "nearest": ("dense", "own"),
        "interpolated": ("dense", "own", "nearest"),
    }
    for item in out:
        ratios, w = variants[item["variant"]]
        for ref in references.get(item["variant"], ()):
            ref_ratios, ref_w = variants[ref]
            d = held.versus(ratios, w=w, reference=held.scores(ref_ratios, w=ref_w))
            item[f"vs_{ref}"] = d["delta"]
            item[f"vs_{ref}_low"] = d["ci_low"]
            item[f"vs_{ref}_high"] = d["ci_high"]
    return out


def _ci(r, ref: str) -> str:
    if pd.isna(r.get(f"vs_{ref}")):
        return ""
    return f"{r[f'vs_{ref}']:+.3f} [{r[f'vs_{ref}_low']:+.3f}, {r[f'vs_{ref}_high']:+.3f}]"


def format_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| resolution | variant | ratios down / mid / up, POA w | held-out score | vs dense "
        "| vs own recipe | interpolated vs nearest |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ratios = (
            f"{r['ratio.down']:.2f} / {r['ratio.mid']:.2f} / {r['ratio.up']:.2f}, {r['poa_w']:g}"
        )
        lines.append(
            f"| {r['resolution']} | {r['variant']} | {ratios} | {r['score']:.3f} | "
            f"{_ci(r, 'dense')} | {_ci(r, 'own')} | {_ci(r, 'nearest')} |"
        )
    inter = table[table["variant"] == "interpolated"]
    if len(inter):
        better = int((inter["vs_nearest_low"] > 0).sum())
        worse = int((inter["vs_nearest_high"] < 0).sum())
        lines.append("")
        lines.append(
            f"Interpolated minus nearest, mean over {len(inter)} resolutions: "
            f"{inter['vs_nearest'].mean():+.4f}; better by its 95 % interval at {better}, worse "
            f"at {worse}, no difference at {len(inter) - better - worse}."
        )
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame):
    from crdiff_search.analysis.plots import delta_bars

    return delta_bars(
        table,
        key="variant",
        column="vs_dense",
        series={
            "own": ("its own searched recipe", "#55a868"),
            "nearest": ("nearest other recipe", "#dd8452"),
            "interpolated": ("interpolated from the others", "#4c72b0"),
        },
        xlabel="resolution left out (width x height)",
        title="Leave one resolution out: predicted recipes against the searched one",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crdiff_search.analysis.interpolation_loo",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("map_csv", help="map.csv of `crdiff map`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--training", default="32x32", help="the model's training size (32x32)")
    parser.add_argument(
        "--prompts", type=int, default=None, help="held-out prompts (default: the map's)"
    )
    parser.add_argument("--resolutions", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args(argv)
    rows = pd.read_csv(args.map_csv).to_dict("records")
    registered = map_recipes(rows)
    if len(registered) < 2:
        raise SystemExit(
            f"error: {args.map_csv} has {len(registered)} repaired resolutions; need 2"
        )
    wanted = [r for r in args.resolutions.split(",") if r]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / TABLE_CSV
    frames = [pd.read_csv(path)] if path.is_file() else []
    done = set(frames[0]["resolution"]) if frames else set()
    for row in rows:
        res = str(row["resolution"]).replace(" (R)", "")
        if (wanted and res not in wanted) or res in done:
            continue
        print(f"{res}:", file=sys.stderr)
        frames.append(
            pd.DataFrame(
                measure(
                    row,
                    registered,
                    training=args.training,
                    n_prompts=args.prompts,
                    log=lambda s: print(s, file=sys.stderr),
                )
            )
        )
        pd.concat(frames, ignore_index=True).to_csv(path, index=False, float_format="%.6g")
    table = pd.concat(frames, ignore_index=True)
    from crdiff_search.analysis.plots import save_png

    save_png(figure(table), out / FIGURE)
    (out / REPORT).write_text(format_markdown(table), encoding="utf-8")
    sys.stdout.write(format_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
