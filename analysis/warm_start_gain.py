"""Cold against warm: trials a study needs when it starts from the neighbours' recipes.

For each target resolution of a map, a registry (SQLite, in ``--out``) holds the map's repaired
recipes at the *other* resolutions; the default testbed study runs there twice, cold and with
``search.warm_start = "registry"``, with the same sampler seed. Each study's pick (best search
score) after every trial where it changed is scored on the map's held-out prompts (memoised by
ratios), so that the curve "held-out gain of the pick against trials spent" exists for both.
Reported: the trials (and images) each needs until its pick first reaches 95 % of the best
held-out gain either found, and the final picks' held-out gains.

Run (about 40 minutes on 2 CPU cores for 3 resolutions at 20 trials)::

    python -m crdiff_search.analysis.warm_start_gain docs/repair-map/map.csv --out docs/warm-start \\
        --resolutions 24x24,32x24,24x32 --trials 20
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

SHARE = 0.95


def _registry(uri: str, recipes: dict, target: str):
    """A fresh registry at ``uri`` holding every recipe but the target's."""
    from crdiff_search.registry import Registry

    reg = Registry(uri)
    for res, recipe in recipes.items():
        if res != target:
            reg.export(recipe)
    return reg


def _picks(table: pd.DataFrame, groups: Sequence[str]) -> list[tuple[int, dict]]:
    """``(trials spent, ratios of the pick)`` at every trial count where the pick changed; the
    pick is the best completed trial so far (ties: the earlier), trial order by index."""
    done = table[table["state"] == "COMPLETE"].sort_values("trial_index")
    out, best = [], None
    for i, (_, row) in enumerate(done.iterrows(), start=1):
        if best is None or row["score"] > best:
            best = row["score"]
            out.append((i, {g: float(row[f"ratio.{g}"]) for g in groups}))
    return out


def measure_target(target: str, args, recipes: dict, out: Path, curves: list, finals: list):
    """Cold and warm studies at ``target`` and the held-out gains of their picks (appended to
    ``curves`` and ``finals``)."""
    from crdiff_search.analysis.heldout import HeldOut
    from crdiff_search.config import load_experiment
    from crdiff_search.runner import run_study
    from crdiff_search.study_folder import StudyFolder

    groups = ("down", "mid", "up")
    uri = f"sqlite:///{(out / 'registries' / target / 'mlflow.db').resolve()}"
    (out / "registries" / target).mkdir(parents=True, exist_ok=True)
    _registry(uri, recipes, target)

    def study_config(warm: str):
        return load_experiment(
            None,
            resolution=target,
            trials=args.trials,
            seed=args.seed,
            **{
                "tracking.enabled": False,
                "tracking.uri": uri,
                "rerank.after_search": False,
                "search.warm_start": warm,
            },
        )

    config = study_config("none")
    held = HeldOut.of(config, n_prompts=args.prompts)

    for arm in ("cold", "warm"):
        folder = out / "studies" / f"{target}-{arm}"
        arm_config = study_config("registry" if arm == "warm" else "none")
        if not StudyFolder(folder).table.is_file():
            print(f"{target} {arm}: searching {args.trials} trials", file=sys.stderr)
            run_study(arm_config, out_dir=folder, progress=False)
        table = StudyFolder(folder).read_table()
        n_images = len(config.prompt_list())
        for trials, ratios in _picks(table, groups):
            gain = held.score(ratios) - held.score(None)
            curves.append(
                {"resolution": target, "arm": arm, "trials": trials,
                 "images": trials * n_images, "heldout_gain": gain,
                 **{f"ratio.{g}": ratios[g] for g in groups}}
            )  # fmt: skip
        last = _picks(table, groups)[-1][1]
        d = held.versus(last)
        finals.append(
            {"resolution": target, "arm": arm, "heldout_gain": d["delta"],
             "low": d["ci_low"], "high": d["ci_high"], "p": d["p"],
             **{f"ratio.{g}": last[g] for g in groups}}
        )  # fmt: skip
        pd.DataFrame(curves).to_csv(out / "curves.csv", index=False, float_format="%.6g")
        pd.DataFrame(finals).to_csv(out / "finals.csv", index=False, float_format="%.6g")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crdiff_search.analysis.warm_start_gain",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("map_csv")
    parser.add_argument("--out", required=True)
    parser.add_argument("--resolutions", default="24x24,32x24,24x32")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of both studies")
    parser.add_argument("--prompts", type=int, default=None, help="held-out prompts (the map's)")
    args = parser.parse_args(argv)

    from crdiff_search.analysis.interpolation_loo import map_recipes

    rows = pd.read_csv(args.map_csv).to_dict("records")
    recipes = map_recipes(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves, finals = [], []
    config = None
    for target in [r for r in args.resolutions.split(",") if r]:
        config = measure_target(target, args, recipes, out, curves, finals)
    curves_t, finals_t = pd.DataFrame(curves), pd.DataFrame(finals)
    lines = [
        "| resolution | arm | final pick, held-out gain [95 % CI] | trials to 95 % of the best "
        "held-out gain | images |",
        "|---|---|---|---|---|",
    ]
    summary = []
    for target, sub in curves_t.groupby("resolution", sort=False):
        best = sub["heldout_gain"].max()
        for arm in ("cold", "warm"):
            c = sub[sub["arm"] == arm].sort_values("trials")
            reached = c[c["heldout_gain"] >= SHARE * best] if best > 0 else c.iloc[0:0]
            first = int(reached["trials"].iloc[0]) if len(reached) else None
            f = finals_t[(finals_t["resolution"] == target) & (finals_t["arm"] == arm)].iloc[0]
            lines.append(
                f"| {target} | {arm} | {f['heldout_gain']:+.3f} [{f['low']:+.3f}, {f['high']:+.3f}] "
                f"| {first if first is not None else 'never'} "
                f"| {first * len(config.prompt_list()) if first is not None else ''} |"
            )
            summary.append({"resolution": target, "arm": arm, "trials_to_95": first})
    (out / "warm_start.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
