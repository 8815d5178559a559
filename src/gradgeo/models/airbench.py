"""An airbench-class CIFAR network: a frozen patch-whitening convolution, three conv blocks, a linear head.

The class of network behind Keller Jordan's CIFAR-10 speed records ("airbench", Jordan 2024, arXiv
2404.00498: 94% test accuracy in under 10 epochs), written here from its published description:

* a 2x2 convolution whose weights are fixed from the data, not trained: the eigenvectors of the covariance
  of 2x2 input patches, scaled by the inverse square root of their eigenvalues, and their negatives
  (2 x C x 2 x 2 output channels), followed by GELU; only its bias trains;
* three blocks of widths 64, 256, 256 (times ``width``): 3x3 conv, 2x2 max-pool, BatchNorm, GELU, 3x3 conv,
  BatchNorm, GELU; every conv without bias, its first ``in_channels`` filters initialized to the identity
  (Dirac) so that the block starts close to a pass-through;
* BatchNorm with a frozen unit scale (only the shift trains), running statistics with momentum 0.4;
* global max-pool, a bias-free linear head, and the logits scaled by 1/9.

The whitening weights need training images: :func:`gradgeo.training.engine.fit` calls
:meth:`AirbenchNet.init_from_data` on the first 5,000 (normalized) training images before the first step; a
model built by hand should call it too. :meth:`AirbenchNet.param_lr_scales` asks for a 64x learning rate on
the BatchNorm shifts, as the published recipe does (:func:`~gradgeo.channel.factory.create_optimizer` honours
it). Not taken over: the look-ahead weight averaging, freezing the whitening bias after 3 epochs and the
alternating flips; the recipe's test-time augmentation is the evaluation option ``tta``
(:mod:`gradgeo.training.objective`).
"""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, scale_channels

__all__ = ["AirbenchNet"]

#: learning-rate multiplier of the BatchNorm shifts (the published recipe's "bias scaler")
BIAS_LR_SCALE = 64.0


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)  # scale fixed at 1: the conv before it sets the scale
    return norm


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():  # torch's default (Kaiming-uniform) init, then the first filters pass their input
        nn.init.dirac_(conv.weight[:min(in_channels, out_channels)])
    return conv


class _Block(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(_conv(in_channels, out_channels), nn.MaxPool2d(2), _batch_norm(out_channels), nn.GELU(),
                         _conv(out_channels, out_channels), _batch_norm(out_channels), nn.GELU())


class AirbenchNet(nn.Module):
    """The airbench-class network (see the module docstring).

    Args:
        num_classes: outputs of the head.
        in_channels: input image channels.
        width: multiplier of the block widths 64, 256, 256.
        whiten_kernel: side of the whitening patches (2 in the published net).
        logit_scale: the factor on the head's output (1/9 in the published net).

    Example:
        >>> net = AirbenchNet(width=0.25)
        >>> net.init_from_data(torch.randn(64, 3, 32, 32))
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, whiten_kernel: int = 2,
                 logit_scale: float = 1 / 9) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        if isinstance(whiten_kernel, bool) or not isinstance(whiten_kernel, int) or not 1 <= whiten_kernel <= 4:
            raise ValueError(f"whiten_kernel must be an integer in 1..4, got {whiten_kernel!r}")
        widths = [scale_channels(c, width) for c in (64, 256, 256)]
        whiten_width = 2 * in_channels * whiten_kernel ** 2
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel, bias=False)
        self.whiten.weight.requires_grad_(False)
        self.whiten_bias = nn.Parameter(torch.zeros(whiten_width))  # trained; the weights are set from the data
        self.blocks = nn.Sequential(_Block(whiten_width, widths[0]), _Block(widths[0], widths[1]),
                                    _Block(widths[1], widths[2]))
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = float(logit_scale)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening weights from normalized training images ``N x C x H x W``: the eigenvectors ``v``
        of the covariance of all ``k x k`` patches (k = ``whiten_kernel``), as filters ``v / sqrt(lambda +
        eps)`` and their negatives, so that the first layer's output has about unit variance in every
        direction of patch space."""
        c, k = self.whiten.in_channels, self.whiten.kernel_size[0]
        if images.dim() != 4 or images.shape[1] != c or min(images.shape[2:]) < k:
            raise ValueError(f"init_from_data needs images N x {c} x H x W with H, W >= {k}, got "
                             f"{tuple(images.shape)}")
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N x C x H' x W' x k x k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / (eigenvalues.clamp(min=0) + eps).sqrt()[:, None]).reshape(-1, c, k, k)
        weight = torch.cat([filters, -filters]).to(self.whiten.weight.dtype)
        self.whiten.weight.copy_(weight.to(self.whiten.weight.device))

    def param_lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name: the BatchNorm shifts train at 64x the base rate."""
        return {f"{name}.bias": BIAS_LR_SCALE for name, module in self.named_modules()
                if isinstance(module, nn.BatchNorm2d)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(nn.functional.gelu(self.whiten(x) + self.whiten_bias[:, None, None]))
        return self.head(torch.amax(x, dim=(2, 3))) * self.logit_scale
