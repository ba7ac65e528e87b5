"""Exceptions shared across the package."""


class UsageError(ValueError):
    """Bad user input (a flag, a config field, a name). The CLI prints it and exits with code 2.

    Raise it before any expensive work (Ray, model loading) starts, with a message that names
    the bad value and what would be valid.
    """
