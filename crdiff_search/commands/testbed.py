"""``crdiff testbed train|eval``: train the embedded scene model, measure its cross-resolution gap."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "testbed",
        help="train or evaluate the embedded scene model",
        description="Train the embedded text-to-image scene model, or measure its score by size.",
    )
    sub = parser.add_subparsers(dest="testbed_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    train = sub.add_parser("train", help="train the scene model from scratch (CPU)")
    train.add_argument(
        "--out", required=True, help="folder for the pipeline (rewritten at checkpoints)"
    )
    train.add_argument("--resolution", type=int, default=32)
    train.add_argument("--steps", type=int, default=4000)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=6e-4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save-every", type=int, default=250)
    train.add_argument("--log-every", type=int, default=25)
    train.add_argument(
        "--max-minutes", type=float, default=None, help="stop (and save) after this much wall time"
    )
    train.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")
    train.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (one thread trains faster on a busy machine)",
    )
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="score the model at one or several sizes")
    ev.add_argument(
        "--resolution",
        action="append",
        default=None,
        metavar="WxH",
        help="size to evaluate (repeatable); default: the standard set",
    )
    ev.add_argument("--prompts", type=int, default=64, help="number of prompts (fixed seeds)")
    ev.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    ev.add_argument(
        "--guidance", type=float, default=None, help="guidance scale (default: the model's)"
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the prompt set and the noise")
    ev.add_argument("--model", default=None, help="pipeline folder (default: the shipped weights)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from crdiff_search.testbed.train import TrainConfig, train

    cfg = TrainConfig(
        resolution=args.resolution,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        save_every=args.save_every,
        log_every=args.log_every,
        max_minutes=args.max_minutes,
        save_dtype=args.save_dtype,
        threads=args.threads,
    )
    cfg.validate()
    info = train(cfg, args.out, log=lambda msg: print(msg, flush=True))
    print(json.dumps(info))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from crdiff_search.resolution import parse_resolution
    from crdiff_search.testbed.evaluate import evaluate, format_table, to_json

    sizes = [parse_resolution(r) for r in args.resolution] if args.resolution else None
    report = evaluate(
        sizes,
        n_prompts=args.prompts,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        model=args.model,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(to_json(report)))
    else:
        sys.stdout.write(format_table(report))
    return 0
