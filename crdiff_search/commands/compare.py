"""``crdiff compare [EXPERIMENT]``: samplers x seeds on one experiment, a table and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SAMPLERS = "anneal,anneal-paper,tpe,gp,random,uniform"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare samplers: one study per (sampler, seed), a table, plots and a report",
        description=(
            "Run one study per (sampler, seed) on the same experiment (same prompts, same "
            "generation seeds) through the search runner, skipping studies already complete, "
            "then write DIR/comparison.parquet and DIR/report.md (+ report.html, figures/, "
            "tables/). Without EXPERIMENT, the testbed study."
        ),
    )
    parser.add_argument(
        "experiment",
        nargs="?",
        default=None,
        help="experiment TOML file (default: the embedded testbed study)",
    )
    parser.add_argument(
        "--samplers",
        default=None,
        help=f"comma-separated sampler names (default: {DEFAULT_SAMPLERS})",
    )
    parser.add_argument(
        "--seeds",
        default="5",
        help="number of sampler seeds (5 -> 0..4) or a list (0,3,7); default 5",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="trials per study, the dense trial included (default: the file's)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: runs/compare-<study>)")
    parser.add_argument(
        "--early-stopping",
        action="store_true",
        help="also run every sampler with ASHA over prompt chunks (+asha arms)",
    )
    parser.add_argument(
        "--early-stopping-only", action="store_true",
        help="run only the +asha arms (to add them to a comparison that has the plain ones)",
    )  # fmt: skip
    parser.add_argument(
        "--report-only",
        metavar="DIR",
        default=None,
        help="rebuild the report of DIR from DIR/comparison.parquet; run nothing",
    )
    parser.add_argument(
        "--merge", nargs="+", metavar="DIR", default=None,
        help="join these comparison folders (other seeds, ASHA arms) into --out; run nothing",
    )  # fmt: skip
    parser.add_argument(
        "--complete-only",
        action="store_true",
        help="run nothing: the table and report from the studies already complete",
    )
    parser.add_argument(
        "--collect-mlflow",
        nargs="+",
        metavar="EXPERIMENT",
        default=None,
        help="add the studies logged in these MLflow experiments (at --tracking-uri)",
    )
    parser.add_argument(
        "--collect",
        nargs="+",
        metavar="DIR",
        default=None,
        help="add existing study tables (folders searched for trials.parquet)",
    )
    parser.add_argument(
        "--share",
        type=float,
        default=0.95,
        help="target for 'trials to reach': this share of the best known "
        "improvement over the dense model (default 0.95)",
    )
    parser.add_argument("--resolution", default=None, help="override the experiment's WxH")
    parser.add_argument(
        "--prompts", type=int, default=None, help="override the number of prompts per trial"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the sampling steps")
    parser.add_argument("--concurrency", type=int, default=None, help="trials at once per study")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any experiment override by dotted path, e.g. resources.cpu=2 "
        "(repeatable; VALUE read as TOML, else as a string)",
    )
    parser.add_argument(
        "--heldout", type=int, default=0, metavar="N", help="score each study's pick and the "
        "dense model on N held-out prompts (tables/picks.csv, the report; 0: off)"
    )  # fmt: skip
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--progress", action="store_true", help="print every trial")
    parser.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from crdiff_search import compare as lib
    from crdiff_search.errors import UsageError

    if not 0.0 < args.share <= 1.0:
        raise UsageError(f"--share must be in (0, 1], got {args.share}")
    if args.report_only or args.merge:  # no study runs
        from crdiff_search.analysis.compare import build_report

        if args.merge and not args.out:
            raise UsageError("--merge needs --out DIR (it may be one of the merged folders)")
        if args.merge:
            print(f"report: {lib.merge_comparisons(args.merge, args.out, share=args.share)}")
        else:
            print(f"report: {build_report(args.report_only, share=args.share)}")
        return 0

    for name in ("prompts", "steps", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")

    collecting = bool(args.collect or args.collect_mlflow)
    run = args.samplers is not None or not collecting
    samplers = lib.parse_samplers(args.samplers or DEFAULT_SAMPLERS) if run else ()
    seeds = lib.parse_seeds(args.seeds)
    plan = None
    out = Path(args.out) if args.out else None
    if run:
        from crdiff_search.config import parse_assignments

        overrides = {
            "resolution": args.resolution,
            "prompts.count": args.prompts,
            "steps": args.steps,
            "concurrency": args.concurrency,
            "tracking_uri": args.tracking_uri,
            **({"tracking.enabled": False} if args.no_tracking else {}),
            **parse_assignments(args.set, flag="--set"),
        }
        plan = lib.plan_comparison(
            args.experiment,
            samplers=samplers,
            seeds=seeds,
            trials=args.trials,
            early_stopping=args.early_stopping or args.early_stopping_only,
            plain=not args.early_stopping_only,
            overrides=overrides,
            out_dir=out,
        )
        out = plan.out_dir
    elif out is None:
        raise UsageError("--collect without --samplers needs --out DIR for the table and report")
    try:
        result = lib.run_comparison(
            plan,
            out,
            collect=args.collect or (),
            collect_mlflow=lib.mlflow_sources(args.collect_mlflow or (), args.tracking_uri),
            address=args.address,
            progress=args.progress,
            share=args.share,
            run=not args.complete_only,
            heldout=args.heldout,
        )
    except RuntimeError as exc:  # nothing finished: no table, no report
        print(f"crdiff compare: {exc}", file=sys.stderr)
        return 1
    print(
        f"ran {len(result.ran)}, skipped {len(result.skipped)} complete, "
        f"collected {len(result.collected)}, failed {len(result.failed)}\n"
        f"table: {result.table_path}\nreport: {result.report_path}"
    )
    for name, error in result.failed.items():
        print(f"failed: {name}: {error}", file=sys.stderr)
    return 1 if result.failed else 0
