"""The comparison report: Markdown, a self-contained HTML page, PNG figures and CSV tables.

The report is a pure function of the tidy table and a few settings, so rebuilding it from the
saved table (``crdiff compare --report-only DIR``) writes the same Markdown.

Example::

    from crdiff_search.analysis import load_table, write_report
    report = write_report(load_table("cmp/comparison.parquet"), "cmp", title="testbed 64x64")
    print(report.markdown.read_text())
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crdiff_search.analysis import plots
from crdiff_search.analysis.curves import AXES, curve_bands
from crdiff_search.analysis.early_stopping import early_stopping_summary, has_early_stopping
from crdiff_search.analysis.stats import (
    final_best,
    identical_methods,
    rank_tests,
    smallest_p,
    summary_table,
    trials_to_reach,
)
from crdiff_search.analysis.table import RATIO_PREFIX, methods_of, ratio_columns

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
TABLES_DIR = "tables"
ALPHA = 0.05


@dataclass(frozen=True)
class Report:
    """Where a report was written."""

    markdown: Path
    html: Path | None
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)


# A report is a list of blocks rendered twice (Markdown and HTML).
@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class _Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class _Image:
    path: Path
    alt: str


def fmt(value, digits: int = 4) -> str:
    """A table cell: ``inf`` as 'never', NaN as '', floats to ``digits`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "never" if value > 0 else "-inf"
        if abs(value) < 1e-12:  # float noise of a difference of equal scores
            return "0"
        if float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _p_is(value: float) -> str:
    """``p = 0.123``, or ``p < 0.001``."""
    text = _p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_md_to_html(text: str) -> str:
    """Escape, then turn `code` and **bold** spans into tags (all the Markdown the report uses)."""
    out = html.escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_markdown(blocks: Sequence[object], base: Path) -> str:
    out = []
    for block in blocks:
        if isinstance(block, _Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, _Text):
            out.append(block.text)
        elif isinstance(block, _Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, _Table):
            out.append(_markdown_table(block.frame))
        elif isinstance(block, _Image):
            out.append(f"![{block.alt}]({block.path.relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


def render_html(blocks: Sequence[object], title: str) -> str:
    out = []
    for block in blocks:
        if isinstance(block, _Heading):
            out.append(f"<h{block.level}>{_inline_md_to_html(block.text)}</h{block.level}>")
        elif isinstance(block, _Text):
            out.append(f"<p>{_inline_md_to_html(block.text)}</p>")
        elif isinstance(block, _Bullets):
            items = "".join(f"<li>{_inline_md_to_html(i)}</li>" for i in block.items)
            out.append(f"<ul>{items}</ul>")
        elif isinstance(block, _Table):
            out.append(_html_table(block.frame))
        elif isinstance(block, _Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            out.append(
                f'<p><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></p>'
            )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;"
        "max-width:100%;overflow-x:auto}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def _verdict(p: float, p_holm: float) -> str:
    if p_holm < ALPHA:
        return f"significant at {ALPHA} after Holm"
    if p < ALPHA:
        return f"significant at {ALPHA} alone, not after Holm"
    return f"not significant at {ALPHA}"


def _findings(
    summary: pd.DataFrame, kruskal: Mapping[str, float], pairs: pd.DataFrame, maximize: bool
) -> list[str]:
    """Plain sentences read off the numbers: the leader, how sure, and block-wise vs uniform."""
    ranked = summary.dropna(subset=["median"]).sort_values("median", ascending=not maximize)
    if ranked.empty:
        return ["No study completed a trial."]
    lead = ranked.iloc[0]
    lines = [
        _winner_line(ranked, pairs, maximize),
        f"Highest median final score: {lead['method']} ({fmt(lead['median'])}, IQR "
        f"{fmt(lead['q25'])} to {fmt(lead['q75'])}, {lead['seeds']} seeds).",
    ]
    if np.isfinite(kruskal.get("p", np.nan)):
        verdict = "differ" if kruskal["p"] < ALPHA else "are not distinguishable"
        lines.append(
            f"Kruskal-Wallis over {kruskal['k']} methods: H = {kruskal['H']:.2f}, "
            f"{_p_is(kruskal['p'])}: the final-best distributions {verdict} at {ALPHA}."
        )
    for _, row in pairs.iterrows():
        if lead["method"] not in (row["a"], row["b"]):
            continue
        other = row["b"] if row["a"] == lead["method"] else row["a"]
        sign = 1.0 if row["a"] == lead["method"] else -1.0
        p_better = row["p_a_better"] if sign > 0 else 1.0 - row["p_a_better"]
        lines.append(
            f"{lead['method']} vs {other}: shift {fmt(sign * row['shift'])}, "
            f"P(better) = {p_better:.2f}, {_p_is(row['p'])} (Holm {_p(row['p_holm'])}): "
            f"{_verdict(row['p'], row['p_holm'])}."
        )
    if "uniform" in set(summary["method"]) and len(summary) > 1:
        uni = summary.set_index("method").loc["uniform"]
        block = ranked[ranked["method"] != "uniform"].iloc[0]
        pair = pairs[
            ((pairs["a"] == block["method"]) & (pairs["b"] == "uniform"))
            | ((pairs["b"] == block["method"]) & (pairs["a"] == "uniform"))
        ]
        if len(pair):
            row = pair.iloc[0]
            sign = 1.0 if row["a"] == block["method"] else -1.0
            better = (sign * row["shift"] > 0) == maximize
            lines.append(
                f"Block-wise vs uniform: the best block-wise method ({block['method']}, median "
                f"{fmt(block['median'])}) {'beats' if better else 'does not beat'} uniform "
                f"(median {fmt(uni['median'])}) by a shift of {fmt(sign * row['shift'])}, "
                f"{_p_is(row['p'])} (Holm {_p(row['p_holm'])}): "
                f"{_verdict(row['p'], row['p_holm'])}."
            )
    return lines


def _winner_line(ranked: pd.DataFrame, pairs: pd.DataFrame, maximize: bool) -> str:
    """Names a winner only when the seeds can support one: the method with the best median,
    ahead of every other method by a pairwise test after Holm's correction."""
    lead = ranked.iloc[0]["method"]
    if len(ranked) < 2:
        return f"Only one method ({lead}) completed: nothing to compare."
    fewest = int(ranked["seeds"].min())
    if fewest < 2:
        return (
            f"**No winner can be named**: with {fewest} seed for some method there is no "
            "spread to test a difference against; run more seeds (`--seeds 0-5`)."
        )
    mine = pairs[(pairs["a"] == lead) | (pairs["b"] == lead)]
    behind = []
    for _, row in mine.iterrows():
        shift = row["shift"] if row["a"] == lead else -row["shift"]
        if not (row["p_holm"] < ALPHA and (shift > 0) == maximize and shift != 0):
            behind.append(row["b"] if row["a"] == lead else row["a"])
    if len(mine) == len(ranked) - 1 and not behind:
        return (
            f"**Winner: {lead}**: ahead of every other method, each pair significant at {ALPHA} "
            "after Holm's correction."
        )
    shown = ", ".join(behind) if behind else "the others"
    return (
        f"**No winner**: {lead} has the highest median, but it is not significantly ahead of "
        f"{shown} at {ALPHA} after Holm's correction ({fewest} or more seeds per method)."
    )


def _resolution_note(pairs: pd.DataFrame) -> str:
    """How small a p-value these seed counts can give at all (exact test, no ties)."""
    n_a, n_b = int(pairs["n_a"].min()), int(pairs["n_b"].min())
    floor = smallest_p(n_a, n_b)
    return (
        f" With {n_a} and {n_b} seeds the smallest attainable p of a pair is {floor:.4f}, "
        f"{min(1.0, floor * len(pairs)):.4f} after Holm over {len(pairs)} pairs."
    )


_PAIR_COLUMNS = (
    "`shift`: Hodges-Lehmann estimate of a - b; `p_a_better`: probability that a seed of a ends "
    "better than one of b (ties half); `rank_biserial` = 2 * p_a_better - 1; `p_holm`: "
    "Holm-adjusted over all pairs."
)


def _rank_test_blocks(
    kruskal: Mapping[str, float], pairs: pd.DataFrame, *, subject: str, unit: str, columns: str
) -> list[object]:
    """Kruskal-Wallis over the methods and the table of pairwise Mann-Whitney tests, on
    ``subject`` (one value per ``unit``), with what the seed counts allow at best."""
    blocks: list[object] = []
    if np.isfinite(kruskal["p"]):
        blocks.append(
            _Text(
                f"Kruskal-Wallis on {subject}: H = {kruskal['H']:.3f}, {_p_is(kruskal['p'])} "
                f"({kruskal['k']} methods, {kruskal['n']} {unit})."
            )
        )
    if len(pairs):
        blocks += [
            _Text(
                f"Two-sided Mann-Whitney U per pair on {subject}; {columns}"
                + _resolution_note(pairs)
            ),
            _Table(pairs),
        ]
    return blocks


def _picks_blocks(picks, methods, maximize, figure, csv) -> tuple[str, list[object]]:
    """The held-out section (summary per method, figure, rank tests) and its one-line finding."""
    from crdiff_search.analysis.picks import heldout_rank_tests, pick_summary, with_methods

    picks = with_methods(picks)
    order = [m for m in methods if m in set(picks["method"])]
    order += [m for m in dict.fromkeys(picks["method"]) if m not in order]
    summary = pd.DataFrame(pick_summary(picks)).set_index("method").loc[order].reset_index()
    shown = summary.assign(
        **{
            "held-out delta (median)": [f"{v:+.4f}" for v in summary["held-out delta (median)"]],
            "held-out delta (IQR)": [f"{v:.4f}" for v in summary["held-out delta (IQR)"]],
        }
    )
    kruskal, pairs = heldout_rank_tests(picks, maximize=maximize)
    csv("heldout_rank_tests", pairs)
    n = ", ".join(str(v) for v in sorted(set(picks["heldout_prompts"])))
    ranked = summary.rename(columns={"held-out delta (median)": "median", "studies": "seeds"})
    ranked = ranked.sort_values("median", ascending=not maximize)
    lead = ranked.iloc[0]
    finding = (
        f"Held out ({n} prompts), the pick a user keeps: highest median gain over dense "
        f"{lead['method']} ({lead['median']:+.4f}). "
        + _winner_line(ranked, pairs, maximize).replace("highest median", "highest held-out median")
    )
    blocks: list[object] = [
        _Heading("The pick, held out"),
        _Text(
            f"Each study's pick (its best search trial) and the dense model scored on {n} "
            "held-out prompts (paired, same seeds); `tables/picks.csv` has one row per study. "
            "`picks above dense`: picks whose paired 95 % interval lies above 0."
        ),
        _Table(shown),
        _Image(
            figure("heldout_picks", plots.heldout_picks_figure(picks, methods=order)),
            "held-out gain of each pick",
        ),
    ]
    blocks += _rank_test_blocks(
        kruskal,
        pairs,
        subject="the held-out gain",
        unit="picks",
        columns=_PAIR_COLUMNS,
    )
    return finding, blocks


def build_blocks(
    table: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
    share: float,
    maximize: bool,
    score_label: str,
    context: Mapping[str, object],
    picks: pd.DataFrame | None = None,
) -> tuple[list[object], dict[str, Path], dict[str, Path]]:
    methods = methods_of(table)
    figures_dir = out_dir / FIGURES_DIR
    tables_dir = out_dir / TABLES_DIR
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    tables: dict[str, Path] = {}

    final = final_best(table, maximize=maximize)
    reach, target = trials_to_reach(table, share, maximize=maximize)
    summary = summary_table(table, share=share, maximize=maximize, final=final, reach=reach)
    kruskal, pairs = rank_tests(final, maximize=maximize)

    def figure(name: str, fig) -> Path:
        figures[name] = plots.save_png(fig, figures_dir / f"{name}.png")
        return figures[name]

    def csv(name: str, frame: pd.DataFrame) -> None:
        tables[name] = tables_dir / f"{name}.csv"
        frame.to_csv(tables[name], index=False, float_format="%.6g")

    seeds = table.groupby("method")["seed"].nunique()
    trials = table.groupby(["method", "seed"]).size()
    direction = "higher is better" if maximize else "lower is better"
    setup = [
        f"methods: {', '.join(f'`{m}`' for m in methods)}",
        f"seeds per method: {fmt(int(seeds.min()))}"
        + (f" to {fmt(int(seeds.max()))}" if seeds.max() != seeds.min() else ""),
        f"trials per study: {fmt(int(trials.min()))}"
        + (f" to {fmt(int(trials.max()))}" if trials.max() != trials.min() else ""),
        f"score: {score_label} ({direction})",
        *(f"{k}: {v}" for k, v in context.items()),
    ]
    blocks: list[object] = [_Heading(title, 1), _Bullets(tuple(setup))]

    findings = _findings(summary, kruskal, pairs, maximize)
    findings += [
        f"`{a}` and `{b}` proposed exactly the same ratios in every study (same seeds), so "
        "their results are one measurement, not two."
        for a, b in identical_methods(table)
    ]
    held_out: list[object] = []
    if picks is not None and len(picks):
        finding, held_out = _picks_blocks(picks, methods, maximize, figure, csv)
        findings.append(finding)
    blocks += [_Heading("Findings"), _Bullets(tuple(findings))]

    shown = summary[
        [
            "method",
            "seeds",
            "trials",
            "median",
            "q25",
            "q75",
            "mean",
            "min",
            "max",
            "reached",
            "trials_to_target",
            "images_to_target",
            "t_trial_s",
            "wall_s",
        ]
    ].copy()
    # the median's distance to the target, signed: equal-looking rounded values are not equal
    gap = (shown["median"] - target) * (1 if maximize else -1)
    shown.insert(shown.columns.get_loc("reached"), "median_vs_target", gap)
    shown = shown.rename(columns={"reached": "seeds_at_target"})
    blocks += [
        _Heading("Summary"),
        _Text(
            f"Final best {score_label} over seeds (median, quartiles, mean, extremes). "
            f"The target is {fmt(target)}: {share:.0%} of the best improvement over the dense "
            "model that any study found. `median_vs_target`: the median final best minus the "
            "target (negative: the typical seed fell short, however close the rounded values "
            "look); `seeds_at_target`: seeds whose best reached it; `trials_to_target` / "
            "`images_to_target`: the median budget those seeds needed ('never' when fewer than "
            "half the seeds reached it); `t_trial_s`: median seconds per trial; `wall_s`: "
            "median wall time per study."
        ),
        _Table(shown),
    ]
    csv("summary", summary)
    blocks += held_out

    blocks.append(_Heading("Best so far"))
    for axis in AXES:
        bands = curve_bands(table, axis, maximize=maximize)
        csv(f"best_so_far_{axis}", bands)
        path = figure(
            f"best_vs_{axis}",
            plots.best_so_far_figure(
                bands, axis, methods=methods, target=target, score_label=score_label
            ),
        )
        blocks.append(_Image(path, f"best so far vs {AXES[axis][2]}"))

    blocks += [_Heading("Final best and rank tests")]
    blocks.append(
        _Image(
            figure(
                "final_best",
                plots.final_best_figure(final, methods=methods, score_label=score_label),
            ),
            "final best per seed",
        )
    )
    blocks += _rank_test_blocks(
        kruskal,
        pairs,
        subject="the final best",
        unit="studies",
        columns=_PAIR_COLUMNS,
    )
    csv("final_best", final)
    csv("rank_tests", pairs)
    csv("trials_to_target", reach)

    ratios = ratio_columns(table)
    if ratios:
        best_rows = (
            final.dropna(subset=["final_best"])
            .sort_values("final_best", ascending=not maximize)
            .drop_duplicates("method")
        )
        sparsity = table.set_index(["method", "seed", "trial_number"])["sparsity"]
        best_rows = best_rows.assign(
            sparsity=[
                sparsity.get((r.method, r.seed, r.best_trial), np.nan)
                for r in best_rows.itertuples()
            ]
        )
        shown = best_rows[["method", "seed", "best_trial", "final_best", *ratios, "sparsity"]]
        shown = shown.rename(columns={c: c.removeprefix(RATIO_PREFIX) for c in ratios})
        blocks += [
            _Heading("Best ratios found"),
            _Text(
                "The best trial of each method (over all its seeds), its ratios and the "
                "achieved sparsity."
            ),
            _Table(shown.reset_index(drop=True)),
            _Heading("Ratio landscape"),
            _Text(
                "Every completed trial, projected on pairs of groups and coloured by score, "
                "one row per method."
            ),
            _Image(
                figure(
                    "landscape",
                    plots.landscape_figure(
                        table, methods=methods, score_label=score_label, maximize=maximize
                    ),
                ),
                "ratio landscape",
            ),
        ]

    if has_early_stopping(table):
        es = early_stopping_summary(table, maximize=maximize, final=final)
        csv("early_stopping", es)
        blocks += [
            _Heading("Early stopping"),
            _Text(
                "Early-stopped methods (`+asha`) against the same sampler run to full "
                "fidelity: `shift` is the Hodges-Lehmann estimate of the difference in final "
                "best, `p` a two-sided Mann-Whitney U test, `images_saved` the share of "
                "images not generated."
            ),
            _Table(es),
            _Image(
                figure(
                    "early_stopping",
                    plots.early_stopping_figure(final, methods=methods, score_label=score_label),
                ),
                "final best vs images",
            ),
        ]

    timing_cols = [
        c
        for c in ("n_images", "t_prune", "t_generate", "t_score", "t_restore", "t_total")
        if c in table and table[c].notna().any()
    ]
    timings = table.groupby("method", sort=False)[timing_cols].median().reset_index()
    blocks += [
        _Heading("Trial timings"),
        _Text("Median per trial (seconds; images per trial)."),
        _Table(timings),
    ]
    csv("timings", timings)

    blocks += [
        _Heading("Files"),
        _Bullets(tuple(f"`{p.relative_to(out_dir).as_posix()}`" for p in tables.values())),
    ]
    return blocks, figures, tables


def write_report(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    title: str = "Sampler comparison",
    share: float = 0.95,
    maximize: bool = True,
    score_label: str = "score",
    context: Mapping[str, object] | None = None,
    write_html: bool = True,
    picks: pd.DataFrame | None = None,
) -> Report:
    """Write ``report.md`` (and ``report.html``), ``figures/*.png`` and ``tables/*.csv``;
    with ``picks`` (``tables/picks.csv`` of a ``--heldout`` comparison) also the section on
    each study's pick scored on held-out prompts, its figure and rank tests."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if table.empty:
        raise ValueError("the comparison table has no finished trials")
    blocks, figures, tables = build_blocks(
        table,
        out_dir,
        title=title,
        share=share,
        maximize=maximize,
        score_label=score_label,
        context=dict(context or {}),
        picks=picks,
    )
    md = out_dir / REPORT_MD
    md.write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    page = None
    if write_html:
        page = out_dir / REPORT_HTML
        page.write_text(render_html(blocks, title), encoding="utf-8")
    return Report(markdown=md, html=page, figures=figures, tables=tables)
