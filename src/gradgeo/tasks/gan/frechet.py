"""Sample-quality measures from a classifier's view of images: Frechet distance and a confidence score.

Both follow the Inception measures, with a Fashion-MNIST classifier in place of Inception-v3
(:mod:`gradgeo.tasks.gan.classifier`): the numbers are **not** the Inception FID / Inception Score and are only
comparable with other numbers computed by gradgeo with the same classifier, sample count and reference set.

* Frechet distance between Gaussians fitted to two sets of features ``(mu_1, S_1)`` and ``(mu_2, S_2)``:
  ``|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})``, the 2-Wasserstein
  distance squared between the Gaussians (Dowson & Landau 1982; Heusel et al., "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017). Computed in float64 with
  two symmetric eigen-decompositions (``S_1^{1/2}``, then the eigenvalues of ``S_1^{1/2} S_2 S_1^{1/2}``,
  which is symmetric positive semi-definite and has the same eigenvalues as ``S_1 S_2``), so no
  complex-valued ``sqrtm`` and no scipy.
* Classifier score: ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of ``p(y|x)`` over the samples
  (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016). Between 1 and the number of
  classes: high when every sample is classified confidently and the classes are used evenly.
"""

from __future__ import annotations

import torch

__all__ = ["classifier_score", "frechet_distance", "gaussian_stats"]


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (unbiased, ``n - 1``) of ``N x D`` features, in float64.

    Example:
        >>> mu, sigma = gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        >>> mu.tolist(), sigma.tolist()
        ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"gaussian_stats needs N x D features with N >= 2, got {tuple(features.shape)}")
    f = features.detach().double()
    mu = f.mean(0)
    centered = f - mu
    return mu, centered.T @ centered / (len(f) - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (formula above).

    Args:
        mu1, mu2: means, ``D``.
        sigma1, sigma2: covariances, ``D x D`` (symmetric positive semi-definite).

    Returns:
        The distance (a squared distance: a mean shift ``d`` between equal covariances gives ``|d|^2``).

    Example:
        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> frechet_distance(torch.zeros(2), eye, torch.tensor([3.0, 4.0]), eye)
        25.0
    """
    mu1, mu2, sigma1, sigma2 = (t.detach().double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: means {tuple(mu1.shape)}, {tuple(mu2.shape)}; covariances "
                         f"{tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    root = _psd_sqrt(sigma1)
    product = root @ sigma2 @ root
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross)


def classifier_score(probabilities: torch.Tensor) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` of ``N x K`` class probabilities (rows sum to 1).

    Example:
        >>> round(classifier_score(torch.eye(4)), 6)  # confident and even: the number of classes
        4.0
        >>> classifier_score(torch.full((5, 4), 0.25))  # undecided: 1
        1.0
    """
    if probabilities.dim() != 2 or len(probabilities) == 0:
        raise ValueError(f"classifier_score needs N x K probabilities, got {tuple(probabilities.shape)}")
    p = probabilities.detach().double()
    marginal = p.mean(0, keepdim=True)
    kl = torch.xlogy(p, p) - torch.xlogy(p, marginal.expand_as(p))  # 0 log 0 = 0
    return float(kl.sum(1).mean().exp())
