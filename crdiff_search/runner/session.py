"""Starting Ray, once, the same way for every workflow (search, rerank, compare)."""

from __future__ import annotations

import logging
import os
import time


def start_ray(
    address: str | None = None, *, num_cpus: int | None = None, attempts: int = 3
) -> bool:
    """Start or join Ray unless it is already up; True when this call started it (the caller
    shuts it down). ``address=None`` starts a fresh local instance (never a cluster that happens
    to run on this machine) with ``num_cpus`` (default: every core)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from crdiff_search import progress

    # Ray's INFO lines (and the workers' own output) only with --verbose.
    kwargs = {
        "include_dashboard": False,
        "log_to_driver": progress.verbose(),
        "logging_level": logging.INFO if progress.verbose() else logging.WARNING,
    }
    if address is None:
        kwargs["num_cpus"] = max(1, num_cpus or os.cpu_count() or 1)
        address = "local"
    # On a loaded machine a local node can miss Ray's fixed 30 s registration window; a second
    # start usually succeeds.
    for attempt in range(attempts):
        try:
            ray.init(address=address, **kwargs)
            return True
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            ray.shutdown()
            time.sleep(2.0)
    return False
