"""``crdiff search [EXPERIMENT]``: run one pruning-ratio study on Ray Tune."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search the pruning ratios of one model at one resolution",
        description=(
            "Run a study: Ray Tune trials, each pruning the model with a candidate set of "
            "per-group ratios and scoring a fixed prompt batch. Without EXPERIMENT, the "
            "testbed study runs."
        ),
    )
    parser.add_argument(
        "experiment",
        nargs="?",
        default=None,
        help="experiment TOML file (default: the embedded testbed study)",
    )
    parser.add_argument("--sampler", default=None, help="sampler name (overrides the file)")
    parser.add_argument("--trials", type=int, default=None, help="budget, the dense trial included")
    parser.add_argument("--seed", type=int, default=None, help="sampler and prompt-set seed")
    parser.add_argument("--concurrency", type=int, default=None, help="trials running at once")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///./mlflow.db)"
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<study>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the study in --out whose driver stopped"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the study plan; start nothing"
    )
    parser.add_argument(
        "--no-rerank",
        action="store_true",
        help="skip the held-out verdict that rerank.after_search asks for",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any experiment field by dotted path, e.g. prompts.count=8 (repeatable; VALUE read "
        "as TOML, else as a string)",
    )
    parser.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from crdiff_search.config import load_experiment
    from crdiff_search.errors import UsageError

    for flag in ("trials", "concurrency"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {value}")
    overrides = {
        "sampler": args.sampler,
        "trials": args.trials,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "tracking_uri": args.tracking_uri,
        "out": args.out,
    }
    if args.no_tracking:
        overrides["tracking.enabled"] = False
    from crdiff_search.config import parse_assignments

    overrides.update(parse_assignments(args.set, flag="--set"))
    if args.resume and args.experiment is None:
        # The study folder has its experiment: nothing needs retyping; a flag given must agree.
        from crdiff_search.runner.study import check_resumable

        out = Path(args.out or load_experiment(None).output_dir).resolve()
        saved = check_resumable(out)
        given = {k: v for k, v in overrides.items() if v is not None and k != "out"}
        config = saved.replace(output=str(out), **_dotted(given))
    else:
        config = load_experiment(args.experiment, **overrides)
    if not args.no_rerank:
        from crdiff_search.config import check_heldout

        check_heldout(config)

    from crdiff_search.runner import prepare, run_study

    _, summary = prepare(config)
    if args.dry_run:
        print(json.dumps(summary, indent=2))
        return 0
    result = run_study(
        config,
        out_dir=config.output_dir,
        resume=args.resume,
        address=args.address,
        progress=not args.quiet,
    )
    ratios = " ".join(f"{g}={r:.3f}" for g, r in result.best_ratios.items())
    print(
        f"study {config.study}: {result.n_trials} trials {result.states}; dense "
        f"{result.dense_score:.4f}, best {result.best_score:.4f} "
        f"({result.best_score - result.dense_score:+.4f}) at {ratios}\n"
        f"table: {result.table_path}",
        file=sys.stdout,
    )
    if result.sampler_stopped and result.finished < result.budget:
        from crdiff_search.study_folder import StudyFolder, read_json

        stop = read_json(StudyFolder(config.output_dir).stop_file, "sampler stop record")
        chain = (
            f" after {stop['iterations']} iterations, {stop['restarts']} restarts"
            if isinstance(stop, dict) and "iterations" in stop
            else ""
        )
        print(
            f"the {config.search.sampler} sampler's chain stopped{chain}: the search ended at "
            f"{result.finished} of at most {result.budget} trials (the dense trial 0 included)"
        )
    if not result.complete:
        why = "interrupted" if result.interrupted else "stopped"
        print(
            f"study {config.study} {why} after {result.finished} of {result.budget} trials; "
            f"continue it with:\n  crdiff search --out {config.output_dir} --resume",
            file=sys.stderr,
        )
        return 130 if result.interrupted else 1
    failed = result.states.get("FAILED", 0)
    if failed == result.n_trials:
        return 1
    from crdiff_search.study_folder import StudyFolder

    verdict = StudyFolder(config.output_dir).rerank_json
    if args.resume and verdict.is_file() and config.rerank.after_search and not args.no_rerank:
        print(
            f"held-out verdict: already in {verdict} "
            f"(run `crdiff rerank {config.output_dir}` to measure it again)"
        )
    elif config.rerank.after_search and not args.no_rerank:
        from crdiff_search.commands.rerank import print_result
        from crdiff_search.rerank import rerank

        print(
            f"\nheld-out verdict: the {config.rerank.top_k} best trials at "
            f"w={','.join(f'{w:g}' for w in config.rerank.weights)} and the dense model on "
            f"{config.rerank.prompts} prompts the search never saw (crdiff rerank)",
            flush=True,
        )
        print_result(
            rerank(
                config.output_dir,
                address=args.address,
                log_mlflow=config.tracking.enabled,
                progress=not args.quiet,
            )
        )
    return 0


def _dotted(overrides: dict) -> dict:
    from crdiff_search.config import OVERRIDE_ALIASES

    return {OVERRIDE_ALIASES.get(k, k): v for k, v in overrides.items()}
