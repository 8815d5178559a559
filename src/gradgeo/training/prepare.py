"""A fresh model made ready for its first step: data-dependent initialization (a model's ``init_from_data``)
and the probe that runs it on two images, so that a model that does not fit the task fails before training,
named (memory that runs out is told apart: :func:`out_of_memory`)."""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.data import DatasetSplits
from gradgeo.training.objective import Objective

__all__ = ["DATA_INIT_IMAGES", "init_from_data", "out_of_memory", "probe"]

#: training images a model's ``init_from_data`` sees (the airbench recipe's 5,000)
DATA_INIT_IMAGES = 5000


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that an allocation failed: Python's MemoryError, a GPU's
    ``torch.OutOfMemoryError``, or the RuntimeError of torch's CPU allocator."""
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in str(error) or "out of memory" in str(error).lower())


def init_from_data(model: nn.Module, splits: DatasetSplits) -> None:
    """A model with an ``init_from_data(images)`` method (e.g. :class:`~gradgeo.models.AirbenchNet`'s whitening
    layer) gets the first :data:`DATA_INIT_IMAGES` training images, normalized, unaugmented, on its device."""
    init = getattr(model, "init_from_data", None)
    if not callable(init):
        return
    count = min(DATA_INIT_IMAGES, len(splits.train_y))
    images, _ = next(iter(splits.loader("train", count, shuffle=False).epoch(0)))
    init(images.to(next(model.parameters()).device))


@torch.no_grad()
def probe(model: nn.Module, objective: Objective, splits: DatasetSplits, name: str) -> None:
    """Run the model on two training images (evaluation mode: no statistics change) and let the objective check
    what comes out, so that a model that does not fit the task fails before its first step, named. Only for an
    objective that checks outputs (:meth:`Objective.output_problem`)."""
    if type(objective).output_problem is Objective.output_problem:
        return
    images, _ = next(iter(splits.loader("train", 2, shuffle=False).epoch(0)))
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        output = model(images)
    except Exception as error:  # the user's model, on the data's images: say whose and what (unless memory ran out)
        if out_of_memory(error):
            raise
        raise ValueError(f"model {name!r} fails on a batch of 2 images of shape {tuple(images.shape[1:])}: "
                         f"{type(error).__name__}: {error}") from None
    finally:
        model.train(was_training)
    problem = objective.output_problem(output, splits.num_classes)
    if problem is not None:
        raise ValueError(f"model {name!r} does not fit this task: for a batch of 2 images of shape "
                         f"{tuple(images.shape[1:])} it returned {problem}")
