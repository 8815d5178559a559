"""Training GANs through :func:`gradgeo.training.engine.fit`: alternating discriminator and generator steps.

:func:`train_gan` is :func:`~gradgeo.training.engine.fit` with a :class:`~gradgeo.models.GAN` (generator and
discriminator in one module, so one optimizer spec, one checkpoint) and :class:`GANObjective`. Each step, on a
batch of ``B`` real images and ``B`` noise vectors:

1. the discriminator step: loss ``BCE(D(real), 1 - label_smoothing) + BCE(D(G(z)), 0)`` with ``G(z)`` detached,
   so only the discriminator gets a gradient, and the optimizer steps;
2. the generator step, with the updated discriminator: the non-saturating loss ``BCE(D(G(z)), 1)`` on the same
   ``G(z)``; its gradient is kept for the generator's parameters only and the optimizer steps again.

One optimizer built from the spec (``"adam:lr=2e-4+sobolev:lam=0.1"``) holds both players' parameters, so the
metric applies to both (the generator's ConvTranspose weights along their output axis, dim 1); Adam keeps
per-parameter state and skips parameters without a gradient, so this equals two optimizers with the same
options. The schedule steps once per step (both players together).

Every epoch evaluates ``eval_samples`` generated images (fixed noise) against the real test images (and the
validation images, with a validation split): the Frechet distance and the confidence score of a cached
Fashion-MNIST classifier (:mod:`gradgeo.tasks.gan.frechet`, :mod:`gradgeo.tasks.gan.classifier`; gradgeo's own measures,
not the Inception FID), and the discriminator's balanced accuracy at telling the held-out real images from the
generated ones. A finished run writes ``samples.png`` (an 8 x 8 grid from fixed noise) and ``samples.pt``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradgeo.data import DatasetSplits
from gradgeo.models import GAN, GAN_MODELS, GANOutput, build_gan
from gradgeo.tasks.base import Builder, Metric, Task
from gradgeo.tasks.gan.classifier import FeatureClassifier, classifier_config, feature_classifier
from gradgeo.tasks.gan.frechet import classifier_score, frechet_distance, gaussian_stats
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import _atomic_save
from gradgeo.training.objective import Objective, eval_batch_size
from gradgeo.training.progress import progress_bar
from gradgeo.training.run_folder import save_figure

__all__ = ["GAN_DATASETS", "GAN_TASK", "GANConfig", "GANObjective", "config_classifier", "sample_grid",
           "save_samples_figure", "train_gan"]

#: the datasets the GAN task trains on (28x28 grayscale, with a cached feature classifier)
GAN_DATASETS = ("fashion-mnist", "mnist")
_EVAL_NOISE_SEED, _GRID_NOISE_SEED = 1234, 4321
SAMPLES_PNG, SAMPLES_PT = "samples.png", "samples.pt"


@dataclasses.dataclass
class GANConfig(TrainConfig):
    """A :class:`~gradgeo.training.config.TrainConfig` for a GAN: DCGAN-style defaults (Adam, lr 2e-4, betas 0.5 and
    0.999, batch 64, constant learning rate, no weight decay). ``label_smoothing`` is one-sided here (the
    discriminator's real targets only).

    Attributes:
        beta1: Adam's first beta (default 0.5); a ``betas=`` option in the spec overrides it and ``beta2``.
        beta2: Adam's second beta (default 0.999).
        latent_dim: the size of the generator's noise vector (default 64).
        eval_samples: the generated images each evaluation measures (Frechet distance, score; default 5000).
        classifier_epochs: the training epochs of the cached feature classifier behind those measures (default
            5; :func:`gradgeo.tasks.gan.classifier_config`).
    """

    model: str = "dcgan"
    optimizer: str = "adam"
    lr: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    schedule: str = "constant"
    beta1: float = 0.5
    beta2: float = 0.999
    latent_dim: int = 64
    eval_samples: int = 5000
    classifier_epochs: int = 5

    def optimizer_defaults(self) -> dict[str, Any]:
        return {**super().optimizer_defaults(), "betas": (self.beta1, self.beta2)}

    def validate(self) -> GANConfig:
        """Raise a ValueError naming the bad field and the accepted values."""
        for name in ("beta1", "beta2"):  # before the base checks, which build the optimizer with these betas
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        super().validate()
        if self.model not in GAN_MODELS:
            raise ValueError(f"model {self.model!r} is not a GAN; the gan task needs one of: {', '.join(GAN_MODELS)}")
        if self.dataset not in GAN_DATASETS:
            raise ValueError(f"the gan task trains on 28x28 grayscale images ({' or '.join(GAN_DATASETS)}), "
                             f"not {self.dataset!r}")
        for name, low in (("latent_dim", 1), ("eval_samples", 2), ("classifier_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.tta != "none":
            raise ValueError("tta (test-time augmentation) is for the classify task; the gan task evaluates the "
                             "images as they are: leave it at none")
        if self.augment:
            raise ValueError("augment is for CIFAR classification; the gan task trains on the images as they are")
        return self


def config_classifier(config: GANConfig, log: Callable[[str], None] | None = print) -> FeatureClassifier:
    """The cached feature classifier of a GAN config's dataset (trained first if there is none)."""
    recipe = classifier_config(config.dataset, config.data_dir, config.classifier_epochs, config.device)
    return feature_classifier(recipe, log=log)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GANObjective(Objective):
    """Alternating discriminator and generator steps (see the module docstring), and the GAN measures.

    Rows hold ``train_loss`` (the discriminator's loss), ``train_acc`` (its accuracy on the training batches,
    real and generated), ``train_g_loss``; ``test_fd`` and ``test_score`` (Frechet distance of
    ``eval_samples`` generated images to the test images, lower is better, and the confidence score, higher is
    better), ``test_loss`` and ``test_acc`` (the discriminator's loss and balanced accuracy on the test images
    against the generated ones: 0.5 means it cannot tell them apart); with a validation split ``val_fd`` and
    ``val_acc`` likewise against the validation images, else None.

    Not data-parallel: the generator step runs outside DDP (:func:`train_gan` refuses torchrun).

    Args:
        model: the GAN being trained.
        classifier: the feature classifier of the measures.
        eval_samples: generated images per evaluation.
        label_smoothing: one-sided: the discriminator's targets for real images are ``1 - label_smoothing``.
    """

    header = (f"{'epoch':>5} {'D loss':>8} {'D acc':>7} {'G loss':>8} {'val FD':>8} {'test FD':>8} {'score':>6} "
              f"{'D test acc':>10} {'lr':>9} {'time s':>7}")

    def __init__(self, model: GAN, classifier: FeatureClassifier, eval_samples: int = 5000,
                 label_smoothing: float = 0.0) -> None:
        self.model = model
        self.classifier = classifier
        self.eval_samples = eval_samples
        self.label_smoothing = label_smoothing
        self._discriminator_params = list(model.discriminator.parameters())
        self._fake: torch.Tensor | None = None
        # the generator's loss sum is 0 until its first step
        self._sums: tuple[torch.Tensor, torch.Tensor | int, torch.Tensor, int] | None = None
        self._reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # real features' stats per split
        self._last: dict[str, Any] = {}  # the latest evaluation, reused by result_fields

    def backward(self, output: GANOutput, y: torch.Tensor, progress: float) -> None:
        loss = _bce(output.real_logits, 1.0 - self.label_smoothing) + _bce(output.fake_logits, 0.0)
        loss.backward()  # the discriminator's gradient only: fake_logits saw a detached G(z)
        self._fake = output.fake
        with torch.no_grad():
            correct = (output.real_logits > 0).sum() + (output.fake_logits < 0).sum()
        d_sum, g_sum, hits, seen = self._sums or (0, 0, 0, 0)
        self._sums = (d_sum + loss.detach() * len(y), g_sum, hits + correct, seen + len(y))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()  # the discriminator (the generator has no gradient yet)
        optimizer.zero_grad(set_to_none=True)
        fake, self._fake = self._fake, None
        if fake is None or self._sums is None:
            raise RuntimeError("GANObjective.step() needs a backward() first: it trains the generator on that "
                               "batch's fakes")
        loss = _bce(self.model.discriminator(fake), 1.0)  # non-saturating, against the updated discriminator
        loss.backward()
        for p in self._discriminator_params:
            p.grad = None
        optimizer.step()  # the generator
        d_sum, g_sum, hits, seen = self._sums
        self._sums = (d_sum, g_sum + loss.detach() * len(fake), hits, seen)

    def train_metrics(self) -> dict[str, Any]:
        d_sum, g_sum, hits, seen = (float(self.context.sum(s)) for s in self._taken_sums(self._sums))
        self._sums = None
        return {"train_loss": d_sum / seen, "train_acc": hits / (2 * seen), "train_g_loss": g_sum / seen}

    def _real_stats(self, splits: DatasetSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._reference:
            images = {"test": splits.test_x, "val": splits.val_x, "train": splits.train_x}[split]
            if images is None:
                raise ValueError("these splits have no validation set; call split_validation(n_val, seed) first")
            self._reference[split] = gaussian_stats(self.classifier.features(images))
        return self._reference[split]

    @torch.no_grad()
    def _discriminator_scores(self, splits: DatasetSplits, split: str, fake_logits: torch.Tensor
                              ) -> tuple[float, float]:
        """The discriminator's loss (as in training, without smoothing) and balanced accuracy on the real images
        of ``split`` against the generated ones."""
        loader = splits.loader(split, eval_batch_size(self.model), shuffle=False)
        batches = progress_bar(loader.epoch(0), len(loader), f"evaluating {split}", self.show_progress)
        real_logits = torch.cat([self.model.discriminator(x) for x, _ in batches]).float()
        loss = _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)
        accuracy = ((real_logits > 0).double().mean() + (fake_logits < 0).double().mean()) / 2
        return float(loss), float(accuracy)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        samples = self.model.sample(self.eval_samples, torch.Generator().manual_seed(_EVAL_NOISE_SEED))
        features, probabilities = self.classifier.features_and_probabilities(samples)
        stats = gaussian_stats(features)
        batch_size = eval_batch_size(self.model)
        fake_logits = torch.cat([self.model.discriminator(self.model.normalize(part * 2 - 1))
                                 for part in samples.split(batch_size)]).float()
        row: dict[str, Any] = {"val_acc": None, "val_fd": None}
        if splits.val_y is not None:
            row["val_fd"] = frechet_distance(*stats, *self._real_stats(splits, "val"))
            row["val_acc"] = self._discriminator_scores(splits, "val", fake_logits)[1]
        test_loss, test_acc = self._discriminator_scores(splits, "test", fake_logits)
        row.update(test_loss=test_loss, test_acc=test_acc, test_fd=frechet_distance(*stats, *self._real_stats(
            splits, "test")), test_score=classifier_score(probabilities))
        self._last = row
        return row

    def format_row(self, row: dict[str, Any]) -> str:
        val = f"{row['val_fd']:>8.3f}" if row.get("val_fd") is not None else f"{'-':>8}"
        return (f"{row['epoch']:>5} {row['train_loss']:>8.4f} {row['train_acc'] * 100:>6.2f}% "
                f"{row['train_g_loss']:>8.4f} {val} {row['test_fd']:>8.3f} {row['test_score']:>6.3f} "
                f"{row['test_acc'] * 100:>9.2f}% {row['lr']:>9.2e} {row['time']:>7.1f}")

    @torch.no_grad()
    def result_fields(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """``final_fd``, ``final_score`` and the references that put them in scale: ``real_fd`` (the Frechet
        distance of as many real training images to the test images: what a perfect generator would get at
        this sample count), ``real_score`` (the score of the real test images) and the classifier's file and
        test accuracy."""
        last = self._last or self.evaluate(model, splits)
        n = min(self.eval_samples, len(splits.train_x))
        order = torch.randperm(len(splits.train_x), generator=torch.Generator().manual_seed(_EVAL_NOISE_SEED))
        real = gaussian_stats(self.classifier.features(splits.train_x[order[:n].to(splits.train_x.device)]))
        real_score = classifier_score(self.classifier.features_and_probabilities(splits.test_x)[1])
        return {"final_fd": last["test_fd"], "final_score": last["test_score"],
                "real_fd": frechet_distance(*real, *self._real_stats(splits, "test")), "real_score": real_score,
                "classifier": {"path": str(self.classifier.path), "test_acc": self.classifier.test_acc}}


def sample_grid(pixels: torch.Tensor, columns: int = 8, padding: int = 2) -> torch.Tensor:
    """Images ``N x C x H x W`` (values in [0, 1]) tiled into one ``rows*(H+p) x columns*(W+p)`` image (``C``
    first for 3 channels, none for 1), with ``padding`` pixels of white between them."""
    n, c, h, w = pixels.shape
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + padding) + padding, columns * (w + padding) + padding)
    for i, image in enumerate(pixels.detach().float().cpu()):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return grid[0] if c == 1 else grid


def save_samples_figure(panels: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """One PNG with a grid of samples (:func:`sample_grid`) per title, side by side (3 per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row = min(3, len(panels))
    rows = -(-len(panels) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(3.4 * per_row, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, pixels) in zip(axes.flat, panels.items()):
        grid = sample_grid(pixels)
        ax.imshow((grid if grid.dim() == 2 else grid.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def train_gan(config: GANConfig, out_dir: str | os.PathLike[str] | None = None,
              **options: Any) -> list[dict[str, Any]]:
    """Train a GAN; arguments as :meth:`gradgeo.tasks.Task.train`, files as :func:`gradgeo.training.engine.train`,
    plus ``samples.png``/``samples.pt``.

    The feature classifier of the measures is loaded from the cache, or trained and cached first
    (:func:`gradgeo.gan.feature_classifier`, a few minutes on a CPU core once).

    Returns:
        One dict per epoch: the fields of :class:`GANObjective`, ``epoch``, ``lr``, ``time``.

    Example:
        >>> config = GANConfig(optimizer="adam:lr=2e-4+sobolev:lam=0.1", epochs=10, train_size=10000)
        >>> history = train_gan(config, "runs/gan")  # doctest: +SKIP
        >>> history[-1]["test_fd"], history[-1]["test_score"]  # doctest: +SKIP
    """
    return GAN_TASK.train(config, out_dir, **options)


def _builder(config: GANConfig, splits: DatasetSplits, log: Callable[[str], None] | None) -> Builder:
    if ddp.torchrun_env() is not None:
        raise ValueError("the gan task trains on one process (its generator step is not data-parallel): run it "
                         "without torchrun")
    classifier = config_classifier(config, log)

    def build(model_args: dict[str, int]) -> tuple[nn.Module, Objective]:
        model = build_gan(config.model, model_args["in_channels"], splits.image_shape[1], mean=splits.mean,
                          std=splits.std, latent_dim=config.latent_dim, width=config.width)
        return model, GANObjective(model, classifier, config.eval_samples, config.label_smoothing)

    return build


def _write_samples(config: GANConfig, model: nn.Module, out: Path) -> None:
    """A finished run's ``samples.pt`` and ``samples.png``: 64 images from fixed noise."""
    if not isinstance(model, GAN):
        raise TypeError(f"the gan task writes samples of a GAN model, got {type(model).__name__}")
    samples = model.sample(64, torch.Generator().manual_seed(_GRID_NOISE_SEED)).cpu()
    _atomic_save((samples * 255).round().to(torch.uint8), out / SAMPLES_PT)
    title = f"{config.optimizer}, seed {config.seed}, epoch {config.epochs}"
    save_samples_figure({title: samples}, out / SAMPLES_PNG)


def _comparison_samples(out: Path, runs: Mapping[str, Mapping[int, Path]], summary: dict[str, Any]) -> None:
    """A comparison's ``samples.png``: the grid of each label's run with the first seed."""
    panels = {f"{label} (seed {seed})": torch.load(folder / SAMPLES_PT, weights_only=True).float() / 255
              for label, folders in runs.items() for seed, folder in list(folders.items())[:1]
              if (folder / SAMPLES_PT).exists()}
    if panels:
        save_samples_figure(panels, out / SAMPLES_PNG)


#: the ``gan`` task; headline metric: the Frechet distance (lower is better)
GAN_TASK = Task("gan", GANConfig, _builder,
                (Metric("test_fd", "Frechet distance", higher_is_better=False, scale=1.0, digits=3),
                 Metric("test_score", "classifier score", scale=1.0, digits=3)), GAN_MODELS, model_kind="a GAN",
                loss_label="discriminator loss", prepare=config_classifier, finish=_write_samples,
                artefacts=_comparison_samples, artefact_names=(SAMPLES_PNG,),
                outputs="metrics.jsonl, checkpoint.pt, result.json and samples.png")
