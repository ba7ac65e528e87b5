"""The code that produced a result: the package version and, from a git checkout, its commit.

>>> code_info()["version"], code_version()     # doctest: +SKIP
('0.1.0', '0.1.0+g0123456789ab')
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def code_info() -> dict[str, str]:
    """The package version and, when the package runs from a git checkout, its commit."""
    from crdiff_search import __version__

    info = {"version": __version__}
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        # An installed copy: a repository around site-packages is not this package's source.
        return info
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return info
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        info["git_commit"] = commit
        info["git_dirty"] = "true" if dirty else "false"
    return info


# ----------------------------------------------------------------------------- image grids


def code_version() -> str:
    """:func:`code_info` as one string: the version, plus ``+g<sha>`` (and ``.dirty``) from a
    checkout. Recipes record it."""
    info = code_info()
    if "git_commit" not in info:
        return info["version"]
    dirty = ".dirty" if info["git_dirty"] == "true" else ""
    return f"{info['version']}+g{info['git_commit'][:12]}{dirty}"
