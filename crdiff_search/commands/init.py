"""``crdiff init MODEL --resolution WxH``: write a ready experiment file for a model."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from crdiff_search.names import GRANULARITIES

    parser = subparsers.add_parser(
        "init",
        help="write a ready experiment file for a model at a resolution",
        description=(
            "Check MODEL as `crdiff search` does (its config files only: the testbed, a local "
            "save_pretrained folder, or a hub id in the local Hugging Face cache) and write an "
            "experiment TOML with the pipeline's sampling defaults, the partition's groups "
            "and every section commented, plus an empty prompts file to fill."
        ),
    )
    parser.add_argument("model", help="'testbed', a save_pretrained folder, or a hub id")
    parser.add_argument(
        "--resolution", required=True, help="WIDTHxHEIGHT to search at, e.g. 768x768"
    )
    parser.add_argument("--out", default=None, help="experiment file (default: <study>.toml)")
    parser.add_argument(
        "--objective",
        default=None,
        help="scorer name (default: scene for the testbed, else imagereward)",
    )
    parser.add_argument(
        "--granularity", default="paper", choices=GRANULARITIES, help="partition granularity"
    )
    parser.add_argument(
        "--include",
        default="",
        help="select weights by structure: a comma list of self_attn, cross_attn, ff, resnet",
    )
    parser.add_argument(
        "--n-groups", type=int, default=0, help="runs of consecutive blocks (0: the default)"
    )
    parser.add_argument(
        "--study", default=None, help="study name (default: <model name>-<resolution>)"
    )
    parser.add_argument(
        "--prompts",
        default=None,
        help="prompts file, relative to the experiment file (default: <experiment "
        "name>.prompts.txt); written without prompts if missing, kept if present",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    from crdiff_search.init_experiment import write_experiment

    include = [k.strip() for k in args.include.split(",") if k.strip()]
    command = f"crdiff init {args.model} --resolution {args.resolution}"
    if args.objective:
        command += f" --objective {args.objective}"
    if args.granularity != "paper":
        command += f" --granularity {args.granularity}"
    result = write_experiment(
        args.model,
        args.resolution,
        out=args.out,
        objective=args.objective,
        granularity=args.granularity,
        include=include,
        n_groups=args.n_groups,
        study=args.study,
        prompts=args.prompts,
        force=args.force,
        command=command,
    )
    config = result.config
    print(
        f"wrote {result.path}: {config.model.source} ({result.pipeline_class}, "
        f"{result.denoiser_class}) at {config.resolution} (sides multiples of "
        f"{result.spatial_factor}); {config.model.steps} steps, guidance {config.model.guidance:g}"
    )
    print(
        f"partition {config.partition.granularity!r}: {len(result.groups)} group(s): "
        f"{', '.join(result.groups)}; criterion {config.partition.criterion} -> "
        f"{result.criterion}; objective {', '.join(config.objective.names)}"
    )
    if result.prompts_written:
        print(f"wrote {result.prompts_path} without prompts: fill it, one prompt a line")
    elif result.prompts_in_file:
        print(f"kept {result.prompts_path} ({result.prompts_in_file} prompts)")
    else:
        print(f"kept {result.prompts_path}: it holds no prompts yet, fill it")
    print(f"then: crdiff search {result.path} --dry-run")
    return 0
