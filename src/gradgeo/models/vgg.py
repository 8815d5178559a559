"""VGG-11 and VGG-16 with BatchNorm, in the CIFAR form: 3x3 conv-BN-ReLU blocks, five max-pools, one linear.

The convolutional part is the paper's configuration A (VGG-11) or D (VGG-16) with BatchNorm after every
convolution; the three large fully connected layers of the ImageNet model are replaced by one linear layer
``512 -> num_classes`` on the pooled features, as in the common CIFAR re-implementations. The pools round
up (``ceil_mode``), so that a 28x28 input reaches 1x1 (28-14-7-4-2-1) like a 32x32 one (32-16-8-4-2-1);
for 32x32 inputs this changes nothing.

References:
    Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
"""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels

__all__ = ["VGG"]

# output channels of each 3x3 convolution; "M" is a 2x2 max-pool
_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 (or 28x28) images.

    Args:
        depth: 11 or 16 (weight layers, counting the final linear one).
        num_classes: outputs of the final linear layer.
        in_channels: input image channels.
        width: multiplier of every convolution's width (64 ... 512).

    Example:
        >>> VGG(11)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, depth: int = 11, num_classes: int = 10, in_channels: int = 3, width: float = 1.0
    ) -> None:
        super().__init__()
        if depth not in _CONFIGS:
            raise ValueError(f"depth must be one of {tuple(_CONFIGS)}, got {depth!r}")
        check_model_args(num_classes, in_channels, width)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out_channels = scale_channels(int(v), width)
                layers += conv_bn_relu(channels, out_channels)
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the features are 1x1 for 28x28 and 32x32 inputs; the mean also accepts larger ones
        return self.classifier(self.features(x).mean(dim=(2, 3)))
