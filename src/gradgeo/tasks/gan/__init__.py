"""GANs: DCGAN-style training through the engine, and sample-quality measures of gradgeo's own.

* :func:`train_gan` with :class:`GANConfig`: one resumable run of :func:`gradgeo.training.engine.fit` with alternating
  discriminator and generator steps (:class:`GANObjective`); the optimizer spec applies to both players.
* :mod:`gradgeo.tasks.gan.frechet`: Frechet distance of Gaussians fitted to features, and the confidence score.
* :mod:`gradgeo.tasks.gan.classifier`: the Fashion-MNIST classifier whose features they use, trained once and cached.
  Its measures are **not** the Inception FID / Inception Score: compare them only within gradgeo.

Comparisons of optimizer specs run through :func:`gradgeo.experiments.compare_task` (``gradgeo compare --task gan``).

Example:
    >>> from gradgeo.gan import GANConfig, train_gan
    >>> config = GANConfig(optimizer="adam:lr=2e-4+sobolev:lam=0.1", epochs=10, train_size=10000)
    >>> history = train_gan(config, "runs/gan")  # doctest: +SKIP
"""

from gradgeo.tasks.gan.classifier import (
    CACHE_ENV_VAR,
    FeatureClassifier,
    cache_dir,
    classifier_config,
    feature_classifier,
)
from gradgeo.tasks.gan.frechet import classifier_score, frechet_distance, gaussian_stats
from gradgeo.tasks.gan.training import (
    GAN_DATASETS,
    GANConfig,
    GANObjective,
    config_classifier,
    sample_grid,
    save_samples_figure,
    train_gan,
)

__all__ = [
    "CACHE_ENV_VAR",
    "GAN_DATASETS",
    "FeatureClassifier",
    "GANConfig",
    "GANObjective",
    "cache_dir",
    "classifier_config",
    "classifier_score",
    "config_classifier",
    "feature_classifier",
    "frechet_distance",
    "gaussian_stats",
    "sample_grid",
    "save_samples_figure",
    "train_gan",
]
