"""Anytime networks end to end: training with a multi-exit strategy, comparisons, budgeted evaluation.

The architectures and the anytime inference API live in :mod:`gradgeo.models.anytime`; the strategies
(``"sum"``, ``"sdn"``, ``"adaloss"``, ``"pcgrad"``, ``"osgd"``) in :mod:`gradgeo.multiexit`. This package is
the task on top of them:

* :func:`train_anytime` with :class:`AnytimeConfig`: one resumable run, per-exit accuracy every epoch.
* :data:`ANYTIME`, the task: ``gradgeo compare --task anytime sum osgd ...`` compares methods x seeds (per-exit
  mean ± 95% CI, FLOPs, early exit, an accuracy-vs-FLOPs plot) through :func:`gradgeo.experiments.compare_task`.
* :mod:`gradgeo.tasks.anytime.budget`: confidence-threshold early exit with thresholds chosen on validation.

Example:
    >>> from gradgeo.tasks.anytime import AnytimeConfig, train_anytime
    >>> config = AnytimeConfig(model="nested_depth", strategy="osgd", optimizer="sgd", epochs=5)
    >>> history = train_anytime(config, "runs/nested-osgd")  # doctest: +SKIP
"""

from gradgeo.tasks.anytime.budget import ExitScores, budgeted_evaluation, early_exit
from gradgeo.tasks.anytime.report import plot_accuracy_vs_flops
from gradgeo.tasks.anytime.training import (
    ANYTIME,
    EXIT_TEST_ACC,
    AnytimeConfig,
    MultiExitObjective,
    evaluate_exits,
    make_strategy_from_spec,
    parse_strategy,
    train_anytime,
)

__all__ = [
    "ANYTIME",
    "EXIT_TEST_ACC",
    "AnytimeConfig",
    "ExitScores",
    "MultiExitObjective",
    "budgeted_evaluation",
    "early_exit",
    "evaluate_exits",
    "make_strategy_from_spec",
    "parse_strategy",
    "plot_accuracy_vs_flops",
    "train_anytime",
]
