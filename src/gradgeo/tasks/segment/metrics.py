"""Segmentation metrics from a confusion matrix accumulated over every pixel of a split.

The rule (the dataset-level one of PASCAL VOC and Cityscapes): count, over all pixels of all images of the
split together, ``confusion[t, p]`` = pixels of true class ``t`` predicted as ``p``. Then

* IoU of class k = ``TP_k / (TP_k + FP_k + FN_k)`` = ``C[k, k] / (row_k + col_k - C[k, k])``; it is undefined
  (``nan``) for a class that is neither in the ground truth nor in the prediction (empty union);
* **mean IoU** = the mean of the IoUs of the classes whose union is non-empty, background (class 0) included;
* **pixel accuracy** = ``trace(C) / sum(C)``.
"""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy"]


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes x num_classes`` int64 counts: row = true class, column = predicted class.

    Args:
        prediction: predicted class per pixel, any shape, integers in ``0..num_classes-1``.
        target: true class per pixel, the same shape.
        num_classes: number of classes.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target need the same shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    index = target.reshape(-1).long() * num_classes + prediction.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of every class (float64), ``nan`` where the class is in neither the target nor the prediction."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    return torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean of :func:`iou_per_class` over the classes with a non-empty union (``nan`` if there are none).

    Example:
        >>> mean_iou(confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 3))  # (1/2 + 1/2) / 2
        0.5
    """
    iou = iou_per_class(confusion)
    present = ~iou.isnan()
    return float(iou[present].mean()) if present.any() else float("nan")


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Fraction of pixels predicted right."""
    return float(confusion.diagonal().sum()) / max(1, int(confusion.sum()))
