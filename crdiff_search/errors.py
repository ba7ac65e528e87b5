"""The package's exceptions: one hierarchy, each kind with the exit code the CLI gives it.

The library raises these and never exits; ``crdiff`` prints ``crdiff CMD: error: MESSAGE`` and
exits with ``exc.exit_code``:

- :class:`UsageError` (2): bad input (a flag, a config field, a name, a malformed recipe).
  Raise it before any expensive work (Ray, model loading) starts, with a message that names the
  bad value and what would be valid.
- :class:`IntegrityError` (3): stored data that fails its own check (a recipe edited after
  export, a registry artifact replaced).
- :class:`ModelSourceError` (4): a model that cannot be found or loaded (offline, unknown id,
  a folder that is no pipeline).
- :class:`CrdiffError` (1): any other failure of the package's own making.
"""


class CrdiffError(Exception):
    """Base of every error the package raises on purpose."""

    exit_code = 1


class UsageError(CrdiffError, ValueError):
    """Bad user input: the CLI prints it and exits with code 2."""

    exit_code = 2


class IntegrityError(CrdiffError):
    """Stored data that fails its checksum or provenance check: exit code 3."""

    exit_code = 3


class ModelSourceError(CrdiffError):
    """A model source that cannot be loaded (missing offline, malformed folder, unknown id):
    exit code 4."""

    exit_code = 4


class ConfigErrors(UsageError):
    """Every problem found in an experiment, one per line (``problems``)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{len(problems)} problems in the experiment:\n{lines}")
