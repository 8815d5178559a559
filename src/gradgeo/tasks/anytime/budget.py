"""Budgeted evaluation of anytime networks: confidence-threshold early exit, thresholds chosen on validation.

Each image leaves the network at the first exit whose confidence (largest softmax probability) reaches a
threshold ``t``, or at the last exit; it costs the FLOPs of the stages up to that exit. Sweeping ``t`` gives
accuracy against average FLOPs. For a budget ``B`` the threshold is chosen on the validation split, as the
one with the best validation accuracy among those whose validation average FLOPs stay within ``B``, and the
test split is then evaluated at that threshold: the test set never takes part in the choice.

References:
    Teerapittayanon, McDanel, Kung, "BranchyNet: Fast Inference via Early Exiting from Deep Neural
    Networks", ICPR 2016 (confidence-based early exit).
    Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018
    (budgeted batch classification, thresholds set on a validation set).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["NEVER", "ExitScores", "budgeted_evaluation", "early_exit", "threshold_grid"]

#: a threshold above any softmax probability: every image goes on to the last exit
NEVER = 2.0


@dataclasses.dataclass(frozen=True)
class ExitScores:
    """What every exit said about every image of one split.

    Attributes:
        confidence: ``K x N`` float tensor, the largest softmax probability of exit k for image n.
        correct: ``K x N`` bool tensor, whether exit k's top class is image n's label.
    """

    confidence: torch.Tensor
    correct: torch.Tensor

    def __post_init__(self) -> None:
        if self.confidence.dim() != 2 or self.confidence.shape != self.correct.shape:
            raise ValueError(f"confidence and correct must both be K x N, got {tuple(self.confidence.shape)} and "
                             f"{tuple(self.correct.shape)}")

    @classmethod
    def from_logits(cls, logits: Sequence[torch.Tensor], labels: torch.Tensor) -> ExitScores:
        """Scores from each exit's logits (``N x classes`` each, first exit first) and the labels."""
        probabilities = torch.stack([out.detach().float().softmax(1) for out in logits])
        confidence, predicted = probabilities.max(2)
        return cls(confidence.cpu(), (predicted == labels).cpu())

    @classmethod
    def cat(cls, parts: Sequence[ExitScores]) -> ExitScores:
        """The scores of several batches, in order."""
        return cls(torch.cat([p.confidence for p in parts], 1), torch.cat([p.correct for p in parts], 1))

    def accuracy(self) -> list[float]:
        """Each exit's accuracy when every image runs to it."""
        return self.correct.float().mean(1).tolist()


def _check_flops(scores: ExitScores, flops: Sequence[float]) -> torch.Tensor:
    if len(flops) != scores.confidence.shape[0]:
        raise ValueError(f"flops must hold one cumulative count per exit ({scores.confidence.shape[0]}), "
                         f"got {len(flops)}")
    return torch.tensor([float(f) for f in flops], dtype=torch.float64)


def early_exit(scores: ExitScores, flops: Sequence[float], thresholds: Sequence[float]) -> list[tuple[float, float]]:
    """Accuracy and average FLOPs per image of confidence-threshold early exit, for each threshold.

    Image n leaves at the first exit k with ``confidence[k, n] >= t`` (the last exit if there is none)
    and costs ``flops[k]``, the FLOPs of the stages up to exit k.

    Args:
        scores: the split's :class:`ExitScores`.
        flops: cumulative FLOPs per image at each exit (from :func:`gradgeo.models.exit_flops`).
        thresholds: the thresholds ``t`` to evaluate.

    Returns:
        ``[(accuracy, average FLOPs), ...]``, one pair per threshold.

    Example:
        >>> scores = ExitScores(torch.tensor([[0.9, 0.4], [0.8, 0.7]]), torch.tensor([[True, False], [True, True]]))
        >>> early_exit(scores, [1.0, 3.0], [0.5, NEVER])  # t = 0.5: image 1 leaves at exit 1, image 2 at exit 2
        [(1.0, 2.0), (1.0, 3.0)]
    """
    cost = _check_flops(scores, flops)
    t = torch.tensor([float(v) for v in thresholds], dtype=scores.confidence.dtype)
    leaves = scores.confidence[None] >= t[:, None, None]  # T x K x N
    leaves[:, -1] = True
    exit_index = leaves.byte().argmax(1)  # first exit that is confident enough, T x N
    correct = scores.correct.gather(0, exit_index)  # correct[exit_index[t, n], n]
    accuracy = correct.double().mean(1)
    average = cost[exit_index].mean(1)
    return list(zip(accuracy.tolist(), average.tolist()))


def threshold_grid(scores: ExitScores, count: int = 101) -> list[float]:
    """Candidate thresholds: ``count`` quantiles of the internal exits' confidences, plus 0 and :data:`NEVER`.

    Quantiles place the candidates where the confidences are, so every step of the sweep moves about the
    same number of images; 0 sends every image out at exit 1 and :data:`NEVER` all of them to the last exit.
    """
    inner = scores.confidence[:-1].flatten().double()
    quantiles = torch.quantile(inner, torch.linspace(0, 1, count, dtype=torch.float64)).tolist() if len(inner) else []
    return sorted({0.0, *quantiles, NEVER})


def budgeted_evaluation(
    val: ExitScores,
    test: ExitScores,
    flops: Sequence[float],
    budgets: Sequence[float] | None = None,
    num_budgets: int = 9,
) -> list[dict[str, Any]]:
    """Test accuracy of early exit under average-FLOP budgets, with each threshold chosen on validation.

    For every budget ``B`` the threshold is the one of :func:`threshold_grid` (on ``val``) with the best
    validation accuracy among those whose validation average FLOPs are ``<= B`` (ties: the cheaper one);
    threshold 0 costs ``flops[0]``, so a budget of at least that always has a choice. The test split is then
    evaluated at that threshold; its average FLOPs may differ slightly from the validation ones.

    Args:
        val: validation scores (choose the thresholds).
        test: test scores (report).
        flops: cumulative FLOPs per image at each exit.
        budgets: average FLOPs per image to evaluate; default ``num_budgets`` values evenly spaced from
            ``flops[0]`` to ``flops[-1]``.
        num_budgets: how many default budgets, ``>= 2``.

    Returns:
        One dict per budget: ``budget``, ``threshold``, ``val_acc``, ``val_flops``, ``test_acc``,
            ``test_flops``.

    Example:
        >>> rows = budgeted_evaluation(val_scores, test_scores, exit_flops(model, (3, 32, 32)))  # doctest: +SKIP
    """
    _check_flops(val, flops)
    _check_flops(test, flops)
    if budgets is None:
        if isinstance(num_budgets, bool) or not isinstance(num_budgets, int) or num_budgets < 2:
            raise ValueError(f"num_budgets must be an integer >= 2, got {num_budgets!r}")
        budgets = torch.linspace(float(flops[0]), float(flops[-1]), num_budgets, dtype=torch.float64).tolist()
    if any(b < flops[0] for b in budgets):
        raise ValueError(f"every budget must be at least the first exit's FLOPs ({flops[0]}), got {list(budgets)}")
    thresholds = threshold_grid(val)
    on_val = early_exit(val, flops, thresholds)
    rows = []
    for budget in budgets:
        # best validation accuracy within the budget; among equals the cheapest (the list is tried in order)
        best = max((i for i, (_, cost) in enumerate(on_val) if cost <= budget),
                   key=lambda i: (on_val[i][0], -on_val[i][1]))
        (test_acc, test_flops), = early_exit(test, flops, [thresholds[best]])
        rows.append({"budget": float(budget), "threshold": thresholds[best], "val_acc": on_val[best][0],
                     "val_flops": on_val[best][1], "test_acc": test_acc, "test_flops": test_flops})
    return rows
