"""The options of ``gradgeo train`` and ``gradgeo compare``: ``--task`` and every task's config fields.

Registered by :func:`gradgeo.cli.build_parser`. Every field of any task's configuration class
(:data:`gradgeo.tasks.TASKS`) is an option; one left out takes the chosen task's default, and one the chosen
task does not have is an error that names the tasks that have it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from gradgeo.cli import _HELP, _add_field
from gradgeo.engine import TrainConfig
from gradgeo.tasks import TASKS, Task, get_task

__all__ = ["add_task_arguments", "task_config"]

_TASK_HELP = {
    "dataset": "fashion-mnist, mnist, cifar10 or cifar100 (segment: the source of the items; gan: the images)",
    "model": "classify: small_cnn, resnet20/32/56, vgg11/16; segment: unet; gan: dcgan",
    "train_size": "classify, gan: train on a stratified subset of this many images; segment: training scenes",
    "val_size": "classify, gan: carve this many training images out as a validation set; segment: validation "
                "scenes (their items held out of the training images)",
    "test_size": "test scenes (items from the test images only)",
    "canvas": "scene height and width in pixels",
    "min_items": "fewest items in a scene",
    "max_items": "most items in a scene",
    "threshold": "an item covers its pixels brighter than this (of 255); later items lie on top",
    "beta1": "Adam's beta1 unless the spec sets betas=B1/B2",
    "beta2": "Adam's beta2 unless the spec sets betas=B1/B2",
    "latent_dim": "size of the generator's noise vector",
    "eval_samples": "generated images each evaluation measures (Frechet distance, score)",
    "classifier_epochs": "epochs of the cached feature classifier of the GAN measures",
    "label_smoothing": "classify, segment: of the cross-entropy; gan: one-sided, of the discriminator's real targets",
}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--task`` and one option per field of any task's config (:data:`gradgeo.tasks.TASKS`), each defaulting
    to the chosen task's default; an option the chosen task lacks is an error (see :func:`task_config`)."""
    parser.add_argument("--task", default="classify", help=f"the workload: {', '.join(TASKS)} (default: classify)")
    fields: dict[str, list[tuple[str, Any]]] = {}
    hints: dict[str, Any] = {}
    for task in TASKS.values():
        task_hints = typing.get_type_hints(task.config_class)
        for field in dataclasses.fields(task.config_class):
            fields.setdefault(field.name, []).append((task.name, field.default))
            hints.setdefault(field.name, task_hints[field.name])
    for name, defaults in fields.items():
        only = "" if len(defaults) == len(TASKS) else f"{' and '.join(t for t, _ in defaults)} only; "
        if len({repr(d) for _, d in defaults}) == 1:
            where = f"{only}default: {defaults[0][1]}"
        else:
            where = "default: " + ", ".join(f"{task} {default}" for task, default in defaults)
        help_text = f"{_TASK_HELP.get(name, _HELP.get(name, ''))} ({where})"
        _add_field(parser, name, hints[name], argparse.SUPPRESS, help_text)
    parser.set_defaults(config_fields=tuple(fields))


def task_config(args: argparse.Namespace) -> tuple[Task, TrainConfig]:
    """The task ``--task`` names and its validated config from the options given."""
    task = get_task(args.task)
    return task, task.make_config(**{name: getattr(args, name) for name in args.config_fields if hasattr(args, name)})
