"""The MLflow pyfunc that carries a recipe in the model registry (logged as code, not pickled).

Loading it with ``mlflow.pyfunc.load_model("models:/crdiff-testbed@64x64")`` and calling
``predict([])`` returns the recipe dict (the declared input, a list of strings, is ignored);
the registry itself reads the JSON artifact directly.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
from mlflow.models import set_model


class RecipeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        with open(context.artifacts["recipe"], encoding="utf-8") as fh:
            self.recipe = json.load(fh)

    # ``list[str]`` rather than ``list[Any]``: MLflow warns that it cannot validate ``Any``.
    # The input is ignored.
    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None):
        return [self.recipe]


set_model(RecipeModel())
