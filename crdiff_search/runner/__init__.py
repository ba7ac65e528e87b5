"""Running a study: Ray Tune trials that keep the model loaded, with Optuna samplers.

Example::

    from crdiff_search.config import load_experiment
    from crdiff_search.runner import run_study

    result = run_study(load_experiment(None, trials=8), out_dir="runs/testbed")
    print(result.best_ratios, result.best_score, result.dense_score)

Importing this package is cheap; Ray, torch and diffusers load when a study runs.
"""

from crdiff_search.runner.study import StudyResult, prepare, run_study

__all__ = ["StudyResult", "prepare", "run_study"]
