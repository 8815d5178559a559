"""Semantic segmentation: item scenes from Fashion-MNIST, a U-Net, mean IoU, training through the engine.

* :mod:`gradgeo.tasks.segment.scenes`: the deterministic scene benchmark (:func:`make_scenes`, :func:`scene_splits`).
* :mod:`gradgeo.tasks.segment.metrics`: confusion matrix, per-class and mean IoU, pixel accuracy.
* :func:`train_segment` with :class:`SegmentConfig`: one resumable run of :func:`gradgeo.training.engine.fit`.

Comparisons of optimizer specs run through :func:`gradgeo.experiments.compare_task` (``gradgeo compare --task
segment``).

Example:
    >>> from gradgeo.segment import SegmentConfig, train_segment
    >>> config = SegmentConfig(optimizer="adam:lr=1e-3+sobolev:lam=0.1", epochs=5, train_size=2000)
    >>> history = train_segment(config, "runs/unet")  # doctest: +SKIP
"""

from gradgeo.tasks.segment.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from gradgeo.tasks.segment.scenes import SCENE_SEED, VAL_SOURCE_FRACTION, make_scenes, scene_splits
from gradgeo.tasks.segment.training import (
    SCENE_SOURCES,
    SegmentationCrossEntropy,
    SegmentConfig,
    evaluate_segmentation,
    load_scene_splits,
    train_segment,
)

__all__ = [
    "SCENE_SEED",
    "SCENE_SOURCES",
    "VAL_SOURCE_FRACTION",
    "SegmentConfig",
    "SegmentationCrossEntropy",
    "confusion_matrix",
    "evaluate_segmentation",
    "iou_per_class",
    "load_scene_splits",
    "make_scenes",
    "mean_iou",
    "pixel_accuracy",
    "scene_splits",
    "train_segment",
]
