"""A tiny branched multi-exit CNN shared by the OSGD and multi-exit strategy tests."""

import torch
from torch import nn


class BranchedCNN(nn.Module):
    """Trunk of three conv stages with a classifier exit after each (``pool x pool`` average pooling per head);
    with ``unused=True`` an extra Linear that no exit reaches."""

    def __init__(self, classes: int, width: int, pool: int, unused: bool = False) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(1 if s == 0 else width, width, 3, padding=1), nn.ReLU()) for s in range(3)
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(pool * pool * width, classes))
            for _ in range(3)
        )
        if unused:
            self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            outputs.append(head(x))
        return outputs


def exit_losses(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [nn.functional.cross_entropy(out, y) for out in net(x)]
