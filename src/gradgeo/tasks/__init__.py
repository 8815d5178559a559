"""The task layer: every workload as one instance of the :class:`Task` protocol (:mod:`gradgeo.tasks.base`).

* ``classify`` (:mod:`gradgeo.tasks.classify`): image classification, cross-entropy.
* ``segment`` (:mod:`gradgeo.tasks.segment`, public as :mod:`gradgeo.segment`): item scenes, a U-Net, mean IoU.
* ``gan`` (:mod:`gradgeo.tasks.gan`, public as :mod:`gradgeo.gan`): a DCGAN, gradgeo's Frechet distance.
* ``anytime`` (:mod:`gradgeo.tasks.anytime`): multi-exit networks trained with a multi-exit strategy.

:data:`TASKS` names them for ``--task``; :func:`make_config` builds a task's configuration from keyword fields.
Comparisons of runs live one layer up, in :mod:`gradgeo.experiments` (:func:`~gradgeo.experiments.compare_task`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gradgeo.models import is_import_path
from gradgeo.tasks.anytime.training import ANYTIME
from gradgeo.tasks.base import Metric, Task
from gradgeo.tasks.classify import CLASSIFY
from gradgeo.tasks.gan.training import GAN_TASK
from gradgeo.tasks.segment.training import SEGMENT
from gradgeo.training.config import TrainConfig

__all__ = ["TASKS", "Metric", "Task", "get_task", "make_config"]

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFY, SEGMENT, GAN_TASK, ANYTIME)}


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` is returned as it is), with a clear error for an unknown one."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def _field_names(config_class: type[TrainConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


def make_config(task: str | Task, **fields: Any) -> TrainConfig:
    """A task's configuration from keyword fields, validated; a field the task lacks is an error that names
    the tasks that have it, and a model of another task names that task."""
    task = get_task(task)
    foreign = sorted(set(fields) - _field_names(task.config_class))
    if foreign:
        owners = {name: [t.name for t in TASKS.values() if name in _field_names(t.config_class)] for name in foreign}
        raise ValueError("; ".join(f"--{name.replace('_', '-')} is an option of --task {' and '.join(owners[name])}"
                                   f", not of --task {task.name}" for name in foreign))
    config = task.config_class(**fields).validate()
    if config.model not in task.models and not (is_import_path(config.model) and task.imports_models):
        owner = next((t for t in TASKS.values() if config.model in t.models), None)
        hint = f" ({owner.model_kind}: --task {owner.name})" if owner is not None else ""
        raise ValueError(f"unknown model {config.model!r} for the {task.name} task{hint}; it takes: "
                         f"{', '.join(task.models)}")
    return config

