"""Study tables rebuilt from MLflow, for studies whose ``trials.parquet`` is not at hand.

A study is a parent run tagged ``crdiff.kind = study`` whose params hold the flattened
experiment (``search.sampler``, ``search.seed``, ``search.early_stopping``); its trials are
child runs tagged ``crdiff.kind = trial`` with the ratios as params, the metrics, timings
(``t_*``) and the trial state as the tag ``crdiff.state``. Trials are numbered in the order
they started.

Example::

    from crdiff_search.analysis.mlflow_source import mlflow_study_tables
    tables = mlflow_study_tables("sqlite:///mlflow.db", "testbed-compare")
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from crdiff_search.errors import UsageError

_METRICS = ("score", "score_delta", "sparsity", "n_images")


def _all_runs(client, experiment_id: str, filter_string: str) -> Iterator:
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _stamp(ms: int | None):
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def mlflow_study_tables(tracking_uri: str, experiment: str) -> dict[str, pd.DataFrame]:
    """``study id -> trial table`` (the ``trials.parquet`` layout) for every study of an
    MLflow experiment."""
    from mlflow.tracking import MlflowClient

    from crdiff_search.tracking import KIND_TAG, PARENT_TAG, STUDY_TAG, TRIAL_TAG

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise UsageError(
            f"no MLflow experiment {experiment!r} at {tracking_uri}; it has: {', '.join(names)}"
        )
    tables: dict[str, pd.DataFrame] = {}
    for parent in _all_runs(client, found.experiment_id, f"tags.`{KIND_TAG}` = 'study'"):
        params = parent.data.params
        if "search.sampler" not in params:
            continue
        study_id = parent.data.tags.get(STUDY_TAG, parent.info.run_id)
        rows = []
        children = _all_runs(
            client,
            found.experiment_id,
            f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{KIND_TAG}` = 'trial'",
        )
        for child in children:
            metrics, tags = child.data.metrics, child.data.tags
            row = {
                "trial_id": tags.get(TRIAL_TAG, child.info.run_id),
                "state": tags.get("crdiff.state", "COMPLETE"),
                "error": tags.get("crdiff.error", ""),
                "started_at": _stamp(child.info.start_time),
                "finished_at": _stamp(child.info.end_time),
                "sampler": params["search.sampler"],
                "seed": int(params.get("search.seed", 0)),
            }
            row.update(
                {k: float(v) for k, v in child.data.params.items() if k.startswith("ratio.")}
            )
            row.update({k: metrics.get(k) for k in _METRICS})
            row.update({k: v for k, v in metrics.items() if k.startswith("t_")})
            rows.append(row)
        if not rows:
            continue
        table = pd.DataFrame(rows).sort_values("started_at", kind="stable")
        table.insert(1, "trial_index", range(len(table)))
        table.attrs["early_stopping"] = params.get("search.early_stopping", "False") == "True"
        tables[study_id] = table.reset_index(drop=True)
    if not tables:
        raise UsageError(f"MLflow experiment {experiment!r} holds no study with trials")
    return tables
