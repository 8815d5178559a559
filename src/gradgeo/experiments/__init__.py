"""The experiments layer: grids of runs, their statistics, tables and plots, for every task alike.

* :func:`compare_task` (:mod:`gradgeo.experiments.compare`): labels x seeds on any task, resumable, then
  :func:`summarize` (:mod:`gradgeo.experiments.summary`): ``summary.json``, ``summary.csv``, the table, the
  curves and the task's artefacts, in the layout of :mod:`gradgeo.experiments.layouts`.
* :mod:`gradgeo.experiments.grid`: the resumable grid of runs; :mod:`gradgeo.experiments.stats`: mean ± 95% CI
  and paired tests; :mod:`gradgeo.experiments.analyze`: channel correlations and gradient noise of a checkpoint,
  and its accuracy under any test-time augmentation (``evaluate_checkpoints``).
* :mod:`gradgeo.experiments.tune` (lr x metric strength on the validation split) and
  :mod:`gradgeo.experiments.queue` (a comparison grid shared by many workers), on Optuna studies
  (:mod:`gradgeo.experiments.storage`; the optional extra ``gradgeo[tune]``, imported only when used).
"""

from gradgeo.experiments.compare import compare_task
from gradgeo.experiments.summary import format_table, summarize

__all__ = ["compare_task", "format_table", "summarize"]
