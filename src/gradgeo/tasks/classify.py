"""The ``classify`` task: image classification with cross-entropy (the engine's own objective)."""

from __future__ import annotations

from collections.abc import Callable

from gradgeo.data import DatasetSplits
from gradgeo.models import MODELS
from gradgeo.tasks.base import Builder, Metric, Task
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import classifier

__all__ = ["CLASSIFY", "TEST_ACC"]

TEST_ACC = Metric("test_acc", "test acc %")


def _builder(config: TrainConfig, splits: DatasetSplits, log: Callable[[str], None] | None) -> Builder:
    return classifier(config)


CLASSIFY = Task("classify", TrainConfig, _builder, (TEST_ACC,), MODELS, model_kind="a classifier", imports_models=True,
                summary="classify")
