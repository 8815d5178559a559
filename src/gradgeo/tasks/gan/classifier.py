"""The Fashion-MNIST classifier whose features the GAN measures use: trained once by gradgeo, then cached.

:func:`feature_classifier` trains a :class:`~gradgeo.models.SmallCNN` with :func:`gradgeo.training.engine.train` on the
whole training set of the dataset (seed 0, the fixed recipe of :func:`classifier_config`) and caches the
weights in ``<cache>/fd-classifier/<dataset>-<key>.pt``, where ``<cache>`` is ``$GRADGEO_CACHE``, else
``$XDG_CACHE_HOME/gradgeo``, else ``~/.cache/gradgeo``, and ``<key>`` is a hash of the recipe and of the data
it was trained on (folder, image counts). The file is written atomically (a temporary file, then a rename),
so concurrent runs and interruptions never leave half a file; later calls load it. The features are the
classifier's penultimate layer: the globally average-pooled output of its last convolution block
(128 values at width 1).

Measures computed with it (:mod:`gradgeo.tasks.gan.frechet`) are comparable only within gradgeo, with the same
classifier: they are not the Inception FID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from gradgeo.data import DatasetSplits, load_dataset
from gradgeo.models import SmallCNN, build_model
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import CHECKPOINT, _atomic_save, read_checkpoint, train
from gradgeo.training.run_folder import restore

__all__ = ["CACHE_ENV_VAR", "FeatureClassifier", "cache_dir", "classifier_config", "feature_classifier"]

#: environment variable naming the cache folder
CACHE_ENV_VAR = "GRADGEO_CACHE"
_FORMAT = 1  # bump when the cached file's content changes meaning


def cache_dir() -> Path:
    """``$GRADGEO_CACHE``, else ``$XDG_CACHE_HOME/gradgeo``, else ``~/.cache/gradgeo``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradgeo"


def classifier_config(dataset: str = "fashion-mnist", data_dir: str | None = None, epochs: int = 5,
                      device: str = "auto") -> TrainConfig:
    """The fixed training recipe of the feature classifier: small CNN, SGD with momentum 0.9 at lr 0.05,
    cosine schedule, weight decay 5e-4, batch 128, every training image, seed 0."""
    return TrainConfig(dataset=dataset, data_dir=data_dir, model="small_cnn", optimizer="sgd", lr=0.05,
                       momentum=0.9, weight_decay=5e-4, epochs=epochs, batch_size=128, schedule="cosine", seed=0,
                       device=device)


@dataclasses.dataclass
class FeatureClassifier:
    """A trained classifier, in eval mode, with the normalization it was trained with.

    Attributes:
        model: the small CNN.
        mean, std: per-channel normalization of its training images on the [0, 1] scale.
        test_acc: its accuracy on the dataset's test set.
        path: the cache file it was loaded from.
    """

    model: SmallCNN
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_acc: float
    path: Path

    def _batches(self, pixels: torch.Tensor, batch_size: int):
        device = next(self.model.parameters()).device
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        for start in range(0, len(pixels), batch_size):
            x = pixels[start : start + batch_size].to(device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            yield self.model.features((x - mean) / std).mean(dim=(2, 3))

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Penultimate features ``N x D`` of images: uint8 (0..255) or float pixels on the [0, 1] scale."""
        return torch.cat(list(self._batches(pixels, batch_size)))

    @torch.inference_mode()
    def features_and_probabilities(self, pixels: torch.Tensor, batch_size: int = 500
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`features` and the class probabilities ``N x classes`` from one pass."""
        features = self.features(pixels, batch_size)
        return features, self.model.classifier(features).float().softmax(1)

    def to(self, device: torch.device | str) -> FeatureClassifier:
        self.model.to(device)
        return self


def _key(config: TrainConfig, splits: DatasetSplits) -> str:
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("data_dir", "device")}
    identity = {"recipe": recipe, "source": str(Path(splits.source).resolve()), "train": len(splits.train_y),
                "test": len(splits.test_y), "format": _FORMAT}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def feature_classifier(
    config: TrainConfig | None = None,
    *,
    splits: DatasetSplits | None = None,
    cache: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> FeatureClassifier:
    """Load the cached feature classifier of ``config``, training and caching it first if there is none.

    Args:
        config: the recipe (default :func:`classifier_config`): its dataset, data folder and epochs.
        splits: the recipe's dataset, already loaded (every training image; no validation split).
        cache: the cache folder (default :func:`cache_dir`).
        log: receives a line when the classifier is trained (``None``: silent).

    Returns:
        The classifier, in eval mode, on the recipe's device.

    Example:
        >>> clf = feature_classifier(classifier_config("fashion-mnist"))  # doctest: +SKIP
        >>> clf.features(load_dataset("fashion-mnist").test_x[:10]).shape  # doctest: +SKIP
        torch.Size([10, 128])
    """
    config = (config or classifier_config()).validate()
    if config.train_size or config.val_size:
        raise ValueError("the feature classifier trains on every training image: no train_size or val_size")
    splits = splits or load_dataset(config.dataset, config.data_dir)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / "fd-classifier" / f"{config.dataset}-{_key(config, splits)}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if log is not None:
            log(f"training the feature classifier of the GAN measures once ({config.model}, {config.epochs} "
                f"epochs on {len(splits.train_y)} {splits.display_name} images) -> {path}")
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".training-") as scratch:
            history = train(config, scratch, log=None, progress=False, splits=splits)
            state = read_checkpoint(Path(scratch) / CHECKPOINT)
        _atomic_save({"format": _FORMAT, "config": dataclasses.asdict(config), "source": str(splits.source),
                      "model_args": state["model_args"], "model": state["model"], "mean": list(splits.mean),
                      "std": list(splits.std), "test_acc": history[-1]["test_acc"]}, path)
    saved = read_checkpoint(path, keys=("format", "config", "model_args", "model", "mean", "std", "test_acc"),
                            fix="delete it: the classifier is trained again on the next use")
    model = build_model(saved["config"]["model"], width=saved["config"]["width"], **saved["model_args"])
    if not isinstance(model, SmallCNN):
        raise ValueError(f"{path} holds a {saved['config']['model']!r} classifier, not a small_cnn; delete it: the "
                         "classifier is trained again on the next use")
    restore(path, saved, {"model": model}, "delete it: the classifier is trained again on the next use")
    model.eval()
    return FeatureClassifier(model, tuple(saved["mean"]), tuple(saved["std"]), saved["test_acc"], path).to(
        config.resolved_device())

