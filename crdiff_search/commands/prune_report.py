"""``crdiff prune-report``: prune a model to given ratios and print the sparsity table."""

from __future__ import annotations

import argparse
import json
import sys

from crdiff_search.names import DTYPES, GRANULARITIES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune-report",
        help="prune a model to block ratios and print the achieved sparsity",
        description=(
            "Load a model, prune it in memory to the given ratios and print the achieved "
            "sparsity per group (and per tensor with --per-tensor). Nothing is written."
        ),
    )
    parser.add_argument(
        "--model",
        default="testbed",
        help="'testbed' (default), a pipeline folder or hub id, or a folder holding only a "
        "UNet or transformer saved with save_pretrained",
    )
    parser.add_argument("--partition", default="paper", help="paper (default), block or kind")
    parser.add_argument(
        "--ratios",
        default="0.3",
        help="GROUP=RATIO,... (e.g. down=0.3,mid=0.3,up=0.3) or one number for every group "
        "(default 0.3); groups not named stay dense",
    )
    parser.add_argument(
        "--criterion",
        default="auto",
        help="auto (default: magnitude-tensor for a transformer paper partition, else magnitude), "
        "magnitude, magnitude-tensor or random",
    )
    parser.add_argument(
        "--include",
        default=None,
        help="weight kinds, comma-separated, among self_attn,cross_attn,ff,resnet "
        "(default: the paper's rule)",
    )
    parser.add_argument(
        "--n-groups", type=int, default=None, help="transformers, block/kind: runs of blocks"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random criterion")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    parser.add_argument("--per-tensor", action="store_true", help="also print one row per tensor")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crdiff_search.errors import UsageError
    from crdiff_search.pruning import (
        CRITERION_NAMES,
        expand_ratios,
        format_table,
        group_table,
        parse_ratios,
    )
    from crdiff_search.search_spaces.selection import normalize_include

    # Everything checkable without the model is checked before loading it.
    if args.partition not in GRANULARITIES:
        raise UsageError(f"unknown partition {args.partition!r}; valid: {', '.join(GRANULARITIES)}")
    if args.criterion != "auto" and args.criterion not in CRITERION_NAMES:
        raise UsageError(
            f"unknown criterion {args.criterion!r}; valid: auto, {', '.join(CRITERION_NAMES)}"
        )
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {args.dtype!r}; valid: {', '.join(DTYPES)}")
    if args.n_groups is not None and args.n_groups < 1:
        raise UsageError(f"--n-groups must be a positive integer, got {args.n_groups}")
    include = normalize_include(args.include)
    ratios = parse_ratios(args.ratios)

    from crdiff_search.models import load_denoiser
    from crdiff_search.pruning import Pruner
    from crdiff_search.search_spaces import build_partition

    model = load_denoiser(args.model, dtype=args.dtype, device=args.device)
    partition = build_partition(model, args.partition, include=include, n_groups=args.n_groups)
    ratios = expand_ratios(ratios, partition.group_names)
    pruner = Pruner(model, partition, criterion=args.criterion, cache="none", seed=args.seed)
    pruner.apply_(ratios)
    tensors = pruner.report()
    groups = group_table(tensors)
    total_params = sum(p.numel() for p in model.parameters())
    pruned = int(groups["pruned"].iloc[-1])
    if args.json:
        out = {
            "model": args.model,
            "model_class": type(model).__name__,
            "partition": partition.name,
            "criterion": pruner.criterion.name,
            "ratios": ratios,
            "dtype": args.dtype,
            "model_params": total_params,
            "selected_params": int(groups["numel"].iloc[-1]),
            "pruned_params": pruned,
            "model_sparsity": pruned / total_params,
            "groups": groups.to_dict(orient="records"),
            "tensors": tensors.to_dict(orient="records"),
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    selected = int(groups["numel"].iloc[-1])
    print(
        f"model: {args.model} ({type(model).__name__}, {total_params:,} parameters, {args.dtype})"
    )
    print(
        f"partition: {partition.name}  criterion: {pruner.criterion.name}  "
        f"selected: {selected:,} weights ({selected / total_params:.1%} of the model)"
    )
    print()
    print(format_table(groups))
    print()
    print(f"pruned {pruned:,} weights: {pruned / total_params:.2%} of all model parameters")
    if args.per_tensor:
        print()
        print(format_table(tensors))
    return 0
