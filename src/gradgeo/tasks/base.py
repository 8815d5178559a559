"""The Task protocol: what one workload (classify, segment, gan, anytime) tells the engine and the experiments.

A :class:`Task` is a record of everything that differs between workloads, and nothing else:

* its configuration class, a :class:`~gradgeo.training.config.TrainConfig` subclass (the CLI makes one option
  per field), the data its runs load, and the model names it accepts;
* how to build a run's model and :class:`~gradgeo.training.engine.Objective` (``builder``); :meth:`Task.train`
  runs them through :func:`gradgeo.training.engine.fit`, the one training loop;
* its metrics (:class:`Metric`: the row key, the name shown, the direction, per exit or not), which the one
  comparison path of :mod:`gradgeo.experiments` summarizes, tabulates and plots;
* what a comparison varies (``compared``: the optimizer spec, or the multi-exit strategy) and its extra
  artefacts (a sample grid, an accuracy-vs-FLOPs plot).

A new workload is one more instance of :class:`Task` in :mod:`gradgeo.tasks` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from gradgeo.data import DatasetSplits
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import Objective, fit, load_splits

__all__ = ["Builder", "Metric", "Task"]

#: ``model_args -> (model, objective)``: what :func:`gradgeo.training.engine.fit` calls for a fresh run
Builder = Callable[[dict[str, int]], tuple[nn.Module, Objective]]


@dataclasses.dataclass(frozen=True)
class Metric:
    """A number every run reports in its rows (``key``), how to show it and which way is better.

    Attributes:
        key: the field of a row of the run's history (the final metric is the last epoch's).
        label: the column header and the plot's axis label.
        higher_is_better: the direction, for the verdict of a paired test.
        scale: shown as ``value * scale`` (100: a fraction shown in %).
        digits: decimals shown.
        per_exit: the row holds one value per exit of an anytime network (a list), not one number.
    """

    key: str
    label: str
    higher_is_better: bool = True
    scale: float = 100.0
    digits: int = 2
    per_exit: bool = False

    def record(self) -> dict[str, Any]:
        """The metric as written into a summary (``per_exit`` only where it is set, as summaries always had)."""
        fields = dataclasses.asdict(self)
        if not self.per_exit:
            del fields["per_exit"]
        return fields


@dataclasses.dataclass(frozen=True)
class Task:
    """A workload the engine trains and the experiments compare (see the module docstring).

    Every callable field must be a module-level function: parallel comparison runs pickle the task.

    Attributes:
        name: what ``--task`` says.
        config_class: the run's hyper-parameters, a :class:`~gradgeo.training.config.TrainConfig` subclass.
        builder: ``builder(config, splits, log) -> Builder``, called once per run before training: checks what
            it needs (and may load things, logging to ``log``), then returns what builds the model and objective.
        metrics: the final metrics of a comparison, headline first.
        models: the model names the task accepts.
        imports_models: whether the task also takes a model of the user's by import path
            (``package.module:callable``, :mod:`gradgeo.models.imported`).
        model_kind: what its models are, for the hint when another task is given one (``"a GAN"``).
        load: ``config -> splits``, the data of a run (shared by sequential runs of a comparison).
        compared: the config field a comparison's labels set (``"optimizer"``: specs; ``"strategy"``: methods).
        label_name: what one label is called in a summary's rows (``"spec"``, ``"method"``).
        summary: the layout of ``summary.json``/``.csv`` and the table (:mod:`gradgeo.experiments.layouts`):
            ``"metrics"`` (every metric, paired tests with verdicts; the one a new task takes), or the layouts
            kept for the committed results: ``"classify"`` and ``"exits"``.
        curves: the metrics plotted per epoch in ``curves.png`` (default: ``metrics``).
        loss_label: what the rows' ``train_loss`` is, for the curves.
        prepare: ``prepare(config, log)``, called once with the shared configuration before any run of a
            comparison (``None``: nothing), e.g. to train the GAN's feature classifier before parallel runs
            would each do it.
        finish: ``finish(config, model, out_dir)`` after a run has finished all its epochs (``None``: nothing),
            e.g. the GAN's sample grid.
        artefacts: ``artefacts(out, runs, summary) -> None`` writes a comparison's extra files into ``out``;
            ``runs[label][seed]`` is the folder of that run. ``None``: none.
        artefact_names: the files ``artefacts`` writes, for the CLI's closing line.
        outputs: what a finished run writes, for the CLI's closing line.
    """

    name: str
    config_class: type[TrainConfig]
    builder: Callable[[Any, DatasetSplits, Callable[[str], None] | None], Builder]
    metrics: tuple[Metric, ...]
    models: tuple[str, ...]
    model_kind: str = "a model"
    imports_models: bool = False  # whether --model takes package.module:callable, a model of the user's
    load: Callable[[Any], DatasetSplits] = load_splits
    compared: str = "optimizer"
    label_name: str = "spec"
    summary: str = "metrics"
    curves: tuple[Metric, ...] | None = None
    loss_label: str = "training loss"
    prepare: Callable[[Any, Callable[[str], None]], Any] | None = None
    finish: Callable[[Any, nn.Module, Path], None] | None = None
    artefacts: Callable[[Path, Mapping[str, Mapping[int, Path]], dict[str, Any]], None] | None = None
    artefact_names: tuple[str, ...] = ()
    outputs: str = "metrics.jsonl, checkpoint.pt and result.json"

    def run_config(self, base: TrainConfig, label: str, seed: int) -> TrainConfig:
        """The configuration of one run of a comparison: ``base`` with the compared field and the seed set."""
        changes: dict[str, Any] = {self.compared: label, "seed": seed}
        return dataclasses.replace(base, **changes)

    def train(self, config: TrainConfig, out_dir: str | os.PathLike[str] | None = None, *,
              log: Callable[[str], None] | None = print, splits: DatasetSplits | None = None,
              **options: Any) -> list[dict[str, Any]]:
        """Train one run of this task through :func:`gradgeo.training.engine.fit` and return its per-epoch rows.

        Args:
            config: the run's hyper-parameters, an instance of ``config_class``.
            out_dir: where ``metrics.jsonl``, ``checkpoint.pt`` and ``result.json`` go (``None``: nowhere).
            log: receives the fixed-width table lines (``None``: silent).
            splits: the loaded data (``load(config)``), to share one load across runs.
            **options: ``resume``, ``progress``, ``stop_after`` and ``on_epoch``, as in
                :func:`gradgeo.training.engine.fit`.

        Returns:
            One dict per epoch: the objective's training and evaluation fields, ``epoch``, ``lr``, ``time``.
        """
        if not isinstance(config, self.config_class):
            raise ValueError(f"the {self.name} task needs a {self.config_class.__name__}, got a "
                             f"{type(config).__name__}")
        config.validate()
        splits = splits or self.load(config)
        build = self.builder(config, splits, log)
        models: list[nn.Module] = []

        def build_and_keep(model_args: dict[str, int]) -> tuple[nn.Module, Objective]:
            model, objective = build(model_args)
            models.append(model)
            return model, objective

        history = fit(config, build_and_keep, out_dir, log=log, splits=splits, **options)
        if self.finish is not None and out_dir is not None and len(history) == config.epochs:
            self.finish(config, models[-1], Path(out_dir))
        return history
