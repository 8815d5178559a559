"""The ``classify`` task: image classification with cross-entropy (the engine's own objective)."""

from __future__ import annotations

from collections.abc import Callable

from gradgeo.data import DatasetSplits
from gradgeo.models import MODELS, build_model
from gradgeo.tasks.base import Builder, Metric, Task
from gradgeo.training.engine import CrossEntropy, TrainConfig

__all__ = ["CLASSIFY", "TEST_ACC"]

TEST_ACC = Metric("test_acc", "test acc %")


def _builder(config: TrainConfig, splits: DatasetSplits, log: Callable[[str], None] | None) -> Builder:
    return lambda model_args: (build_model(config.model, **model_args, **config.model_kwargs()),
                               CrossEntropy(config.label_smoothing, tta=config.tta))


CLASSIFY = Task("classify", TrainConfig, _builder, (TEST_ACC,), MODELS, model_kind="a classifier", imports_models=True,
                summary="classify")
