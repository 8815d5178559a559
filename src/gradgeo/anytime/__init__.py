"""Anytime networks end to end: training with a multi-exit strategy, comparisons, budgeted evaluation.

The architectures and the anytime inference API live in :mod:`gradgeo.models.anytime`; the strategies
(``"sum"``, ``"sdn"``, ``"adaloss"``, ``"pcgrad"``, ``"osgd"``) in :mod:`gradgeo.multiexit`. This package is
the engine layer on top of them:

* :func:`train_anytime` with :class:`AnytimeConfig`: one resumable run, per-exit accuracy every epoch.
* :func:`compare_anytime`: methods x seeds, per-exit mean ± 95% CI, FLOPs, accuracy-vs-FLOPs plot.
* :mod:`gradgeo.anytime.budget`: confidence-threshold early exit with thresholds chosen on validation.

Example:
    >>> from gradgeo.anytime import AnytimeConfig, train_anytime
    >>> config = AnytimeConfig(model="nested_depth", strategy="osgd", optimizer="sgd", epochs=5)
    >>> history = train_anytime(config, "runs/nested-osgd")  # doctest: +SKIP
"""

from gradgeo.anytime.budget import ExitScores, budgeted_evaluation, early_exit
from gradgeo.anytime.compare import compare_anytime, format_anytime_table, summarize_anytime
from gradgeo.anytime.training import (
    AnytimeConfig,
    MultiExitObjective,
    evaluate_exits,
    make_strategy_from_spec,
    parse_strategy,
    train_anytime,
)

__all__ = [
    "AnytimeConfig",
    "ExitScores",
    "MultiExitObjective",
    "budgeted_evaluation",
    "compare_anytime",
    "early_exit",
    "evaluate_exits",
    "format_anytime_table",
    "make_strategy_from_spec",
    "parse_strategy",
    "summarize_anytime",
    "train_anytime",
]
