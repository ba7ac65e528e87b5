"""``crdiff rerank STUDY``: the study's top trials x POA weights on held-out prompts."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rerank",
        help="re-rank a study's best trials with POA on held-out prompts",
        description=(
            "Score the top-k trials of a finished study at each POA weight on held-out prompts "
            "(plus the dense model and each trial without POA), as Ray tasks; print and save the "
            "ranked table (STUDY/rerank.parquet, .csv, .json) and log it under the study's run."
        ),
    )
    parser.add_argument(
        "study", metavar="STUDY", help="a study output folder (holds trials.parquet)"
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="trials to re-rank (default: rerank.top_k, 4)"
    )
    parser.add_argument(
        "--w",
        default=None,
        help="POA weights, comma-separated (default: rerank.weights, 1.0,1.5)",
    )
    parser.add_argument("--prompts", default=None, help="held-out prompts file (one per line)")
    parser.add_argument(
        "--n-prompts",
        type=int,
        default=None,
        help="held-out prompt count (default: rerank.prompts, 128)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="held-out caption and generation seed base (default: rerank.seed, 10000)",
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crdiff_search.errors import UsageError
    from crdiff_search.rerank import parse_weights, rerank

    weights = parse_weights(args.w) if args.w is not None else None
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k} must be at least 1")
    if args.n_prompts is not None and args.n_prompts < 1:
        raise UsageError(f"--n-prompts {args.n_prompts} must be at least 1")
    if args.prompts and not Path(args.prompts).is_file():
        raise UsageError(f"--prompts file {args.prompts!r} does not exist")
    result = rerank(
        args.study,
        top_k=args.top_k,
        weights=weights,
        prompts_file=args.prompts,
        n_prompts=args.n_prompts,
        seed=args.seed,
        address=args.address,
        log_mlflow=not args.no_mlflow,
        progress=not args.quiet,
    )
    print_result(result)
    return 0


def print_result(result) -> None:
    """The ranked table, the winner, the files, and the verdict as the last line."""
    from crdiff_search.rerank import CONFIDENCE, format_table

    print(format_table(result.table))
    win = result.winner
    interval = ""
    if win.get("delta_low") is not None:
        interval = (
            f", {CONFIDENCE:.0%} CI [{win['delta_low']:+.4f}, {win['delta_high']:+.4f}], "
            f"p={win['p_vs_dense']:.3g}; better on {win['wins']}, equal on {win['ties']}, "
            f"worse on {win['losses']} prompts"
        )
    print(
        f"\nbest candidate: trial {win['trial_id']} at w={win['w']:g}: score {win['score']:.4f} "
        f"(dense {result.dense_score:.4f}, delta {win['score_delta']:+.4f}{interval}; "
        f"without POA {win['pruned_score']:.4f})"
    )
    print(f"saved: {', '.join(result.files)}")
    verdict = result.verdict
    print(f"verdict: {verdict['status'].upper()}: {verdict['message']}")
