"""What every anytime network is: K stages run one after another, stage k ending in exit k
(:class:`AnytimeNetwork`), and the exit head they share (:class:`ExitHead`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from gradgeo.models.blocks import conv_bn_relu

__all__ = ["AnytimeNetwork", "ExitHead"]


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


class ExitHead(nn.Module):
    """An exit classifier: 3x3 conv-BN-ReLU (same width), global average pooling, linear.

    The convolution lets an early exit adapt features that the trunk also shapes for later stages.

    Args:
        in_channels: channels of the features the exit reads.
        num_classes: number of logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(in_channels, in_channels))
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class AnytimeNetwork(nn.Module):
    """Base class: K stages run in order, stage k returns ``(state, logits of exit k)``.

    ``stages[k]`` is called as ``state, logits = stages[k](state)`` with the input image as the first
    state; the state is whatever the next stage reads (a tensor, or the list of stored activations of a
    nested network). Subclasses build ``self.stages``; each stage holds its own layers and exit head, so
    :meth:`stage_parameters` partitions the parameters.
    """

    stages: nn.ModuleList

    @property
    def num_exits(self) -> int:
        """K, the number of exits (one per stage)."""
        return len(self.stages)

    def exits(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Run the stages one after another and yield each exit's logits as soon as it is computed.

        Every layer runs once; stopping the iteration skips the remaining stages entirely.

        Args:
            x: images ``N x C x H x W``.

        Returns:
            An iterator over the K logits tensors ``N x num_classes``, first exit first.
        """
        state: object = x
        for stage in self.stages:
            state, logits = stage(state)
            yield logits

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All K exits' logits, first exit first (the same computation as iterating :meth:`exits`)."""
        return list(self.exits(x))

    def stage_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of stage ``k`` (0-based: ``stage_parameters(0)`` feeds exit 1 and every later one)."""
        _check_count("k", k, 0, self.num_exits - 1)
        return list(self.stages[k].parameters())


