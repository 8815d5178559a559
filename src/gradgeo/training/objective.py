"""What a training run optimizes and reports: the :class:`Objective` protocol (loss, running training metrics,
evaluation, the per-epoch table), cross-entropy classification as its first instance, and evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import torch
from torch import nn

from gradgeo.data import DatasetSplits
from gradgeo.training import ddp
from gradgeo.training.progress import progress_bar

_Sums = TypeVar("_Sums")

__all__ = ["TABLE_HEADER", "TTA_LEVELS", "CrossEntropy", "Objective", "eval_batch_size", "evaluate", "format_row",
           "tta_logits"]

#: test-time augmentations: none; the mean of the logits of the image and its mirror image; and that, averaged
#: half and half with the same pair for the image translated one pixel up-left and one down-right (reflected
#: borders): 6 forward passes an image (the airbench recipe's)
TTA_LEVELS = ("none", "flip", "flip-translate")


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The logits of ``model`` on the batch ``x`` under test-time augmentation ``tta`` (one of
    :data:`TTA_LEVELS`), as float32.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> tta_logits(model, torch.zeros(2, 1, 2, 2), "flip-translate").shape
        torch.Size([2, 3])
    """
    if tta not in TTA_LEVELS:
        raise ValueError(f"unknown tta {tta!r}; expected one of {TTA_LEVELS}")

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(images).float() + model(images.flip(-1)).float())

    if tta == "none":
        return model(x).float()
    if tta == "flip":
        return mirrored(x)
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (mirrored(padded[..., :h, :w]) + mirrored(padded[..., 2:, 2:]))
    return 0.5 * (mirrored(x) + shifted)


def eval_batch_size(model: nn.Module) -> int:
    """64 on CPU (small batches stay in cache: 2-3x the images/s of batch 1000 for ResNet-20 on a 2-core
    machine), 1000 on accelerators."""
    return 64 if next(model.parameters()).device.type == "cpu" else 1000


@torch.inference_mode()
def evaluate(model: nn.Module, splits: DatasetSplits, split: str, batch_size: int | None = None,
             tta: str = "none", progress: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on a split (``"train"``, ``"val"``, ``"test"``) under the
    test-time augmentation ``tta`` (:func:`tta_logits`); ``batch_size`` defaults to :func:`eval_batch_size`;
    ``progress``: a tqdm bar over the batches."""
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    dtype = next(model.parameters()).dtype
    loader = splits.loader(split, batch_size, shuffle=False, dtype=dtype)
    for x, y in progress_bar(loader.epoch(0), len(loader), f"evaluating {split}", progress):
        logits = tta_logits(model, x, tta)
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    model.train(was_training)
    return {"loss": total_loss / count, "acc": correct / count}


TABLE_HEADER = f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'val acc':>8} {'test loss':>9} {'test acc':>8} " \
               f"{'lr':>9} {'time s':>7}"


def format_row(row: dict[str, Any]) -> str:
    val = f"{row['val_acc'] * 100:7.2f}%" if row.get("val_acc") is not None else f"{'-':>8}"
    return (f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['train_acc'] * 100:>8.2f}% {val} "
            f"{row['test_loss']:>9.4f} {row['test_acc'] * 100:>7.2f}% {row['lr']:>9.2e} {row['time']:>7.1f}")


class Objective(ABC):
    """What a training step minimizes and what an epoch reports: the part of a run that depends on the model's
    output. :func:`fit` runs everything else (data, optimizer, schedule, checkpoints, metrics files).

    :class:`CrossEntropy` is the objective of :func:`train`; :mod:`gradgeo.tasks.anytime` has a multi-exit one.
    Every row an objective reports must hold ``train_loss``, ``train_acc``, ``val_acc`` (None without a
    validation split), ``test_loss`` and ``test_acc``, so that comparisons can read any run.

    Data-parallel training (:mod:`gradgeo.training.ddp`): every rank runs :meth:`backward` on its share of each batch
    and :meth:`train_metrics` after each epoch (which must sum the ranks' running sums with
    ``self.context.sum``); rank 0 alone calls :meth:`evaluate`, :meth:`state_dict` and :meth:`result_fields`.
    """

    #: the table header matching :meth:`format_row`
    header: str = TABLE_HEADER
    #: the data-parallel ranks this objective trains on; :func:`fit` sets it (one process by default)
    context: ddp.Context = ddp.Context()
    #: False: DDP averages the gradients that :meth:`backward` writes, in its backward hooks. True:
    #: :meth:`backward` averages them over ``context.group`` itself (for a rule that is not linear in the
    #: batch's gradient, e.g. OSGD), and :func:`fit` runs the step in DDP's ``no_sync``
    reduces_gradients: bool = False
    #: whether :meth:`evaluate` shows progress bars over its batches; :func:`fit` sets it (off by default)
    show_progress: bool = False

    @abstractmethod
    def backward(self, output: Any, y: torch.Tensor, progress: float) -> None:
        """Compute the batch's loss from the model's ``output``, write its gradient into ``p.grad`` and add
        the batch to the running training metrics (on the device: no host synchronization).

        Args:
            output: what the model returned for the batch.
            y: the labels.
            progress: fraction of training done before this step, in [0, 1).
        """

    @abstractmethod
    def train_metrics(self) -> dict[str, Any]:
        """The training metrics of the batches since the last call (``train_loss``, ``train_acc``, ...), of
        all ranks' shares together."""

    def _taken_sums(self, sums: _Sums | None) -> _Sums:
        """The running sums :meth:`backward` keeps, checked to exist for :meth:`train_metrics`."""
        if sums is None:
            raise RuntimeError(f"{type(self).__name__}.train_metrics() was called before any backward(): the "
                               "epoch had no training batch")
        return sums

    @abstractmethod
    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """The evaluation fields of an epoch's row: ``val_acc`` (None without a validation split),
        ``test_loss``, ``test_acc`` and any others."""

    def output_problem(self, output: Any, num_classes: int) -> str | None:
        """What is wrong with the model's ``output`` for a batch of 2 images (checked before a run's first step),
        or None; by default nothing is checked."""
        return None

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Update the parameters from the gradient :meth:`backward` wrote: ``optimizer.step()``. A two-player
        objective (:class:`gradgeo.gan.GANObjective`) overrides it to update one player, then compute and apply
        the other's gradient; the schedule steps once after it."""
        optimizer.step()

    def format_row(self, row: dict[str, Any]) -> str:
        """One line of the fixed-width table printed during training."""
        return format_row(row)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint with the model and the optimizer (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run resumes."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got state with keys {sorted(state)}")

    def result_fields(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """Extra fields for ``result.json``, computed once from the trained model (none by default)."""
        return {}


class CrossEntropy(Objective):
    """Cross-entropy of a classifier's logits, with optional label smoothing; evaluated under the test-time
    augmentation ``tta`` (one of :data:`TTA_LEVELS`)."""

    def __init__(self, label_smoothing: float = 0.0, tta: str = "none") -> None:
        if tta not in TTA_LEVELS:
            raise ValueError(f"unknown tta {tta!r}; expected one of {TTA_LEVELS}")
        self.label_smoothing = label_smoothing
        self.tta = tta
        self._sums: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def output_problem(self, output: Any, num_classes: int) -> str | None:
        if not isinstance(output, torch.Tensor):
            return f"a {type(output).__name__}; a classifier returns one logits tensor, 2 x {num_classes}"
        if tuple(output.shape) != (2, num_classes):
            return f"shape {tuple(output.shape)}; expected 2 x {num_classes} logits (one per class)"
        return None

    def backward(self, output: torch.Tensor, y: torch.Tensor, progress: float) -> None:
        loss = nn.functional.cross_entropy(output, y, label_smoothing=self.label_smoothing)
        loss.backward()
        loss_sum, correct, seen = self._sums or (torch.zeros((), device=y.device),
                                                 torch.zeros((), device=y.device, dtype=torch.long), 0)
        self._sums = (loss_sum + loss.detach() * len(y), correct + (output.detach().argmax(1) == y).sum(),
                      seen + len(y))

    def train_metrics(self) -> dict[str, Any]:
        loss_sum, correct, seen = (self.context.sum(s).item() for s in self._taken_sums(self._sums))
        self._sums = None
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen}

    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        test = evaluate(model, splits, "test", tta=self.tta, progress=self.show_progress)
        val = (evaluate(model, splits, "val", tta=self.tta, progress=self.show_progress)["acc"]
               if splits.val_y is not None else None)
        return {"val_acc": val, "test_loss": test["loss"], "test_acc": test["acc"]}
