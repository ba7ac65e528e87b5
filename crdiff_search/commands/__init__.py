"""Sub-commands of ``crdiff``: one module each, each with ``register(subparsers)``.

A command's handler is set with ``parser.set_defaults(func=handler)``; the handler takes the
parsed ``argparse.Namespace`` and returns an exit code.
"""
