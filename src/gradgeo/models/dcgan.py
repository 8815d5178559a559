"""A DCGAN-style generator (ConvTranspose) and discriminator for small images, and the pair as one module.

Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
Networks", ICLR 2016: transposed convolutions in the generator, strided convolutions in the discriminator,
BatchNorm and ReLU in the generator, LeakyReLU(0.2) in the discriminator, weights drawn from N(0, 0.02).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, scale_channels

__all__ = ["GAN", "DCGANDiscriminator", "DCGANGenerator", "GANOutput"]


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 (28 for Fashion-MNIST), got {image_size!r}")


def _dcgan_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """Noise ``N x latent_dim`` to images ``N x C x S x S`` in [-1, 1]: three ConvTranspose layers.

    ``latent -> 2c`` at ``S/4 x S/4`` (kernel ``S/4`` on the 1x1 noise), ``2c -> c`` at ``S/2`` and ``c -> C`` at
    ``S`` (kernel 4, stride 2), BatchNorm and ReLU between them, tanh at the end; ``c = 64 * width``.

    Example:
        >>> DCGANGenerator(latent_dim=16)(torch.zeros(2, 16)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 64, out_channels: int = 1, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        check_model_args(latent_dim, out_channels, width)
        _check_image_size(image_size)
        c = scale_channels(64, width)
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * c, image_size // 4, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )
        _dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images ``N x C x S x S`` to one logit each (real: positive): two strided convolutions and a linear layer.

    ``C -> c`` at ``S/2``, ``c -> 2c`` at ``S/4`` (kernel 4, stride 2, LeakyReLU(0.2)), then a linear layer;
    ``c = 64 * width``. No BatchNorm: the discriminator is also evaluated alone (its accuracy on held-out real
    against generated images), where batch statistics of mixed batches would change its output.

    Example:
        >>> DCGANDiscriminator()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2])
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        check_model_args(1, in_channels, width)
        _check_image_size(image_size)
        c = scale_channels(64, width)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(2 * c * (image_size // 4) ** 2, 1),
        )
        _dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


class GANOutput(NamedTuple):
    """What :meth:`GAN.forward` returns for a batch of real images."""

    real_logits: torch.Tensor  #: the discriminator on the real images
    fake_logits: torch.Tensor  #: the discriminator on the generated images, detached from the generator
    fake: torch.Tensor  #: the generated images (normalized like the real ones), attached to the generator


class GAN(nn.Module):
    """A generator and a discriminator as one module, so one optimizer, checkpoint and ``state_dict`` hold both.

    The generator makes images in [-1, 1]; :meth:`normalize` maps them to [0, 1] pixels and then with the
    training set's ``mean`` and ``std``, the normalization the real batches come with, so that the
    discriminator sees both in the same space.

    Args:
        generator: noise to images in [-1, 1].
        discriminator: images to logits.
        mean: per-channel mean of the training images on the [0, 1] scale.
        std: per-channel std, likewise.

    Example:
        >>> gan = GAN(DCGANGenerator(latent_dim=16), DCGANDiscriminator(), [0.29], [0.35])
        >>> out = gan(torch.zeros(4, 1, 28, 28))
        >>> out.real_logits.shape, out.fake.shape
        (torch.Size([4]), torch.Size([4, 1, 28, 28]))
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, generator: DCGANGenerator, discriminator: nn.Module, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = generator.latent_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` standard normal latent vectors on the model's device (from ``generator``, drawn on the CPU, or
        from the global RNG on the device)."""
        device = self.mean.device
        if generator is not None:
            return torch.randn(n, self.latent_dim, generator=generator).to(device)
        return torch.randn(n, self.latent_dim, device=device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] to the normalized space of the real batches."""
        return ((images + 1) / 2 - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 500) -> torch.Tensor:
        """``n`` generated images as [0, 1] pixels (float32, on the model's device), generator in eval mode."""
        was_training = self.generator.training
        self.generator.eval()
        parts = [(self.generator(self.noise(min(batch_size, n - start), generator)).float() + 1) / 2
                 for start in range(0, n, batch_size)]
        self.generator.train(was_training)
        return torch.cat(parts).clamp_(0, 1)

    def forward(self, real: torch.Tensor) -> GANOutput:
        """One noise batch as large as ``real`` through the generator (global RNG), and the discriminator on
        both: the inputs of a discriminator step and, through ``fake``, of the generator step after it."""
        fake = self.normalize(self.generator(self.noise(len(real))).to(real.dtype))
        logits = self.discriminator(torch.cat([real, fake.detach()]))  # one pass: no BatchNorm in it
        return GANOutput(logits[: len(real)], logits[len(real) :], fake)
