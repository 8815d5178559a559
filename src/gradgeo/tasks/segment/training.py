"""Training segmentation networks on the item scenes: :func:`gradgeo.training.engine.fit` with a per-pixel objective.

:func:`train_segment` is :func:`~gradgeo.training.engine.fit` with :class:`SegmentationCrossEntropy` and the scenes of
:mod:`gradgeo.tasks.segment.scenes`: the same optimizer specs (a U-Net's ConvTranspose weights are smoothed along
their output axis, dim 1), schedule, atomic checkpoints, ``metrics.jsonl``, ``result.json`` and resuming to the
identical result. Every epoch reports the per-pixel cross-entropy, pixel accuracy and mean IoU
(:mod:`gradgeo.tasks.segment.metrics`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from gradgeo.data import DatasetSplits, load_dataset
from gradgeo.models import SEGMENTATION_MODELS, build_segmentation_model
from gradgeo.tasks.base import Builder, Metric, Task
from gradgeo.tasks.segment.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from gradgeo.tasks.segment.scenes import scene_splits
from gradgeo.training.config import TrainConfig
from gradgeo.training.objective import Objective, eval_batch_size
from gradgeo.training.progress import progress_bar

__all__ = ["SCENE_SOURCES", "SEGMENT", "SegmentConfig", "SegmentationCrossEntropy", "evaluate_segmentation",
           "load_scene_splits", "train_segment"]

#: the datasets whose images can be pasted as items (grayscale, 28x28, dark background)
SCENE_SOURCES = ("fashion-mnist", "mnist")


@dataclasses.dataclass
class SegmentConfig(TrainConfig):
    """A :class:`~gradgeo.training.config.TrainConfig` for segmentation on item scenes
    (:mod:`gradgeo.tasks.segment.scenes`). ``dataset`` names the source of the items (:data:`SCENE_SOURCES`),
    ``model`` a segmentation model (:data:`gradgeo.models.SEGMENTATION_MODELS`; default ``"unet"``), and
    ``val_size`` counts scenes; the optimizer defaults to Adam at lr 1e-3 with no weight decay, batch 32 (Adam
    learns the scenes several times faster than SGD at 0.05 here).

    Attributes:
        train_size: training scenes (default 2000).
        test_size: test scenes (default 1000), made of items from the test images only.
        canvas: a scene's height and width in pixels (default 64).
        min_items: the fewest items pasted into a scene (default 2).
        max_items: the most items pasted into a scene (default 4).
        threshold: an item covers its pixels brighter than this, of 255 (default 32).
    """

    model: str = "unet"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    train_size: int | None = 2000
    test_size: int = 1000
    canvas: int = 64
    min_items: int = 2
    max_items: int = 4
    threshold: int = 32

    def validate(self) -> SegmentConfig:
        """Raise a ValueError naming the bad field and the accepted values."""
        super().validate()
        if self.model not in SEGMENTATION_MODELS:
            raise ValueError(f"model {self.model!r} is not a segmentation model; the segment task needs one of: "
                             f"{', '.join(SEGMENTATION_MODELS)}")
        if self.dataset not in SCENE_SOURCES:
            raise ValueError(f"the segment task pastes grayscale 28x28 items from {' or '.join(SCENE_SOURCES)}, "
                             f"not {self.dataset!r}")
        for name in ("train_size", "test_size", "min_items", "max_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (a number of scenes or items), got {value!r}")
        if self.min_items > self.max_items:
            raise ValueError(f"min_items ({self.min_items}) must not exceed max_items ({self.max_items})")
        if self.canvas < 28 or self.canvas % 8:
            raise ValueError(f"canvas must be a multiple of 8 (the U-Net halves it 3 times) and >= 28 (an item), "
                             f"got {self.canvas}")
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold must be in 0..254, got {self.threshold}")
        if self.tta != "none":
            raise ValueError("tta (test-time augmentation) is for the classify task; the segment task evaluates the "
                             "images as they are: leave it at none")
        if self.augment:
            raise ValueError("augment (crop and flip of the images) would misalign the label maps: leave it off "
                             "for the segment task")
        return self


def load_scene_splits(config: SegmentConfig) -> DatasetSplits:
    """The scenes of a config (the same for every run of a comparison: fixed seeds, see
    :mod:`gradgeo.tasks.segment.scenes`)."""
    train_size = cast(int, config.train_size)  # SegmentConfig.__post_init__ checked it is an int
    return scene_splits(load_dataset(config.dataset, config.data_dir), train_size, config.test_size,
                        config.val_size, canvas=config.canvas, min_items=config.min_items,
                        max_items=config.max_items, threshold=config.threshold)


@torch.inference_mode()
def evaluate_segmentation(
    model: nn.Module, splits: DatasetSplits, split: str, batch_size: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Per-pixel mean cross-entropy, pixel accuracy, mean IoU and the confusion matrix of a split
    (``progress``: a tqdm bar over the batches).

    Returns:
        ``{"loss", "acc", "miou", "confusion"}`` (the metrics' rule: :mod:`gradgeo.tasks.segment.metrics`).
    """
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    k = splits.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    total_loss, pixels = 0.0, 0
    loader = splits.loader(split, batch_size, shuffle=False, dtype=dtype)
    for x, y in progress_bar(loader.epoch(0), len(loader), f"evaluating {split}", progress):
        logits, target = model(x).float(), y.long()
        total_loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        pixels += target.numel()
        confusion += confusion_matrix(logits.argmax(1), target, k).cpu()
    model.train(was_training)
    return {"loss": total_loss / pixels, "acc": pixel_accuracy(confusion), "miou": mean_iou(confusion),
            "confusion": confusion}


class SegmentationCrossEntropy(Objective):
    """Per-pixel cross-entropy of a segmentation network's logits ``N x K x H x W`` against label maps.

    Rows hold ``train_loss`` and ``train_acc`` (pixel accuracy of the training batches), ``val_acc`` and
    ``val_miou`` (None without a validation split), ``test_loss``, ``test_acc`` (pixel accuracy) and
    ``test_miou``; ``result.json`` adds the final per-class test IoU.

    Args:
        classes: the class names (background first), for the per-class IoU.
        label_smoothing: of the per-pixel cross-entropy.
    """

    header = (f"{'epoch':>5} {'train loss':>10} {'train pix':>9} {'val mIoU':>8} {'test loss':>9} {'test pix':>8} "
              f"{'test mIoU':>9} {'lr':>9} {'time s':>7}")

    def __init__(self, classes: tuple[str, ...], label_smoothing: float = 0.0) -> None:
        self.classes = classes
        self.label_smoothing = label_smoothing
        self._sums: tuple[torch.Tensor, torch.Tensor, int, int] | None = None
        self._test_confusion: torch.Tensor | None = None

    def backward(self, output: torch.Tensor, y: torch.Tensor, progress: float) -> None:
        target = y.long()
        loss = nn.functional.cross_entropy(output, target, label_smoothing=self.label_smoothing)
        loss.backward()
        loss_sum, correct, images, pixels = self._sums or (torch.zeros((), device=y.device),
                                                           torch.zeros((), device=y.device, dtype=torch.long), 0, 0)
        self._sums = (loss_sum + loss.detach() * len(y), correct + (output.detach().argmax(1) == target).sum(),
                      images + len(y), pixels + target.numel())

    def train_metrics(self) -> dict[str, Any]:
        loss_sum, correct, images, pixels = (self.context.sum(s).item() for s in self._taken_sums(self._sums))
        self._sums = None
        return {"train_loss": loss_sum / images, "train_acc": correct / pixels}

    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        row: dict[str, Any] = {"val_acc": None, "val_miou": None}
        if splits.val_y is not None:
            val = evaluate_segmentation(model, splits, "val", progress=self.show_progress)
            row.update(val_acc=val["acc"], val_miou=val["miou"])
        test = evaluate_segmentation(model, splits, "test", progress=self.show_progress)
        self._test_confusion = test["confusion"]
        row.update(test_loss=test["loss"], test_acc=test["acc"], test_miou=test["miou"])
        return row

    def format_row(self, row: dict[str, Any]) -> str:
        val = f"{row['val_miou'] * 100:7.2f}%" if row.get("val_miou") is not None else f"{'-':>8}"
        return (f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['train_acc'] * 100:>8.2f}% {val} "
                f"{row['test_loss']:>9.4f} {row['test_acc'] * 100:>7.2f}% {row['test_miou'] * 100:>8.2f}% "
                f"{row['lr']:>9.2e} {row['time']:>7.1f}")

    def result_fields(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """``final_test_miou`` and ``test_iou_per_class`` (class name -> IoU, None for an empty union)."""
        confusion = self._test_confusion
        if confusion is None:  # a finished run resumed: fit() did not evaluate
            confusion = evaluate_segmentation(model, splits, "test")["confusion"]
        iou = iou_per_class(confusion).tolist()
        return {"final_test_miou": mean_iou(confusion),
                "test_iou_per_class": {name: None if v != v else v for name, v in zip(self.classes, iou)}}


def train_segment(config: SegmentConfig, out_dir: str | os.PathLike[str] | None = None,
                  **options: Any) -> list[dict[str, Any]]:
    """Train a segmentation network on item scenes; arguments and files as :func:`gradgeo.training.engine.train`.

    Args:
        config: the run's hyper-parameters (scene counts and rules included).
        out_dir, options: as in :meth:`gradgeo.tasks.Task.train` (``resume``, ``progress``, ``log``, ``stop_after``,
            and ``splits``: the scenes of :func:`load_scene_splits`, to share one build across runs).

    Returns:
        One dict per epoch: ``train_loss``, ``train_acc`` (pixel accuracy), ``val_acc``, ``val_miou``,
            ``test_loss``, ``test_acc``, ``test_miou``, ``lr``, ``time``.

    Example:
        >>> config = SegmentConfig(optimizer="sgd+sobolev:lam=0.1", epochs=10, train_size=2000)
        >>> history = train_segment(config, "runs/unet")  # doctest: +SKIP
        >>> history[-1]["test_miou"]  # doctest: +SKIP
        0.62
    """
    return SEGMENT.train(config, out_dir, **options)


def _builder(config: SegmentConfig, splits: DatasetSplits, log: Callable[[str], None] | None) -> Builder:
    if splits.train_y.dim() != 3:
        raise ValueError(f"train_segment needs scenes with label maps (load_scene_splits), got {splits!r}")

    def build(model_args: dict[str, int]) -> tuple[nn.Module, Objective]:
        model = build_segmentation_model(config.model, width=config.width, **model_args)
        return model, SegmentationCrossEntropy(splits.classes, config.label_smoothing)

    return build


#: the ``segment`` task; headline metric: the test mean IoU
SEGMENT = Task("segment", SegmentConfig, _builder,
               (Metric("test_miou", "test mIoU %"), Metric("test_acc", "test pixel acc %")), SEGMENTATION_MODELS,
               model_kind="a segmentation model", load=load_scene_splits)
