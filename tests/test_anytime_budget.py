"""Tests for gradgeo.anytime.budget: confidence-threshold early exit and thresholds chosen on validation."""

from __future__ import annotations

import pytest
import torch

from gradgeo.tasks.anytime.budget import NEVER, ExitScores, budgeted_evaluation, early_exit, threshold_grid

FLOPS = [10.0, 30.0, 70.0]


def random_scores(n: int, seed: int) -> ExitScores:
    """Three exits, later ones more confident and more often right."""
    g = torch.Generator().manual_seed(seed)
    confidence = (torch.rand(3, n, generator=g) * 0.5 + torch.tensor([[0.2], [0.35], [0.5]])).clamp(max=1)
    correct = torch.rand(3, n, generator=g) < torch.tensor([[0.5], [0.7], [0.9]])
    return ExitScores(confidence, correct)


def test_each_image_leaves_at_the_first_confident_exit():
    scores = ExitScores(torch.tensor([[0.9, 0.3, 0.2], [0.5, 0.8, 0.1], [0.6, 0.6, 0.3]]),
                        torch.tensor([[True, False, False], [False, True, False], [True, True, True]]))
    # t = 0.7: image 1 leaves at exit 1 (right), image 2 at exit 2 (right), image 3 at the last exit (right)
    (accuracy, flops), = early_exit(scores, FLOPS, [0.7])
    assert accuracy == 1.0 and flops == pytest.approx((10 + 30 + 70) / 3)
    assert early_exit(scores, FLOPS, [0.0]) == [(pytest.approx(1 / 3), 10.0)]  # everything at exit 1
    assert early_exit(scores, FLOPS, [NEVER]) == [(1.0, 70.0)]  # everything at the last exit


def test_from_logits_and_accuracy():
    logits = [torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 3.0], [0.0, 3.0]])]
    scores = ExitScores.from_logits(logits, torch.tensor([0, 0]))
    assert scores.correct.tolist() == [[True, False], [False, False]]
    assert scores.accuracy() == [0.5, 0.0]
    assert torch.allclose(scores.confidence[1], torch.full((2,), torch.tensor([0.0, 3.0]).softmax(0)[1].item()))
    both = ExitScores.cat([scores, scores])
    assert both.confidence.shape == (2, 4)


def test_threshold_grid_spans_both_extremes():
    grid = threshold_grid(random_scores(50, 0), count=11)
    assert grid[0] == 0.0 and grid[-1] == NEVER and grid == sorted(grid) and len(grid) <= 13


def test_budgets_choose_thresholds_on_validation_only():
    val, test = random_scores(400, 1), random_scores(300, 2)
    rows = budgeted_evaluation(val, test, FLOPS)
    assert [r["budget"] for r in rows] == pytest.approx(torch.linspace(10, 70, 9).tolist())
    for row in rows:
        assert row["val_flops"] <= row["budget"]
        assert (row["test_acc"], row["test_flops"]) == early_exit(test, FLOPS, [row["threshold"]])[0]
    assert rows[0]["threshold"] == 0.0 and rows[0]["test_flops"] == 10.0
    accuracies = [r["val_acc"] for r in rows]
    assert accuracies == sorted(accuracies)  # a larger budget never chooses worse on validation
    # the test split does not take part in the choice: other test scores, the same thresholds
    other = budgeted_evaluation(val, random_scores(300, 3), FLOPS)
    assert [r["threshold"] for r in other] == [r["threshold"] for r in rows]


def test_bad_inputs_are_named():
    scores = random_scores(10, 0)
    with pytest.raises(ValueError, match="one cumulative count per exit"):
        early_exit(scores, [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="at least the first exit's FLOPs"):
        budgeted_evaluation(scores, scores, FLOPS, budgets=[5.0])
    with pytest.raises(ValueError, match="num_budgets"):
        budgeted_evaluation(scores, scores, FLOPS, num_budgets=1)
    with pytest.raises(ValueError, match="K x N"):
        ExitScores(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool))
