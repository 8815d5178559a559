"""Training anytime networks: per-exit losses from one forward pass, combined by a multi-exit strategy.

:func:`train_anytime` is :func:`gradgeo.training.engine.fit` with the :class:`MultiExitObjective`: the same data,
optimizer specs (``"sgd+sobolev:lam=0.1"`` composes with OSGD: the strategy writes ``p.grad``, the metric
shapes it, the optimizer steps), schedule, atomic checkpoints, ``metrics.jsonl`` and ``result.json``, and
resuming to the identical result. Each epoch reports every exit's loss and accuracy; ``result.json`` adds the
per-exit FLOPs and the budgeted (early-exit) evaluation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradgeo.channel.factory import parse_options
from gradgeo.data import DatasetSplits
from gradgeo.models.anytime import ANYTIME_MODELS, AnytimeNetwork, build_anytime_model, exit_flops
from gradgeo.models.imported import is_import_path
from gradgeo.multiexit.strategies import STRATEGIES, MultiExitStrategy, make_strategy, strategy_options
from gradgeo.tasks.anytime.budget import ExitScores, budgeted_evaluation
from gradgeo.tasks.anytime.report import write_accuracy_vs_flops
from gradgeo.tasks.base import Builder, Metric, Task
from gradgeo.training.config import TrainConfig
from gradgeo.training.objective import Objective, eval_batch_size
from gradgeo.training.progress import progress_bar

__all__ = ["ANYTIME", "EXIT_TEST_ACC", "AnytimeConfig", "MultiExitObjective", "evaluate_exits",
           "make_strategy_from_spec", "parse_strategy", "train_anytime"]


#: each exit's final test accuracy
EXIT_TEST_ACC = Metric("test_exit_acc", "test acc %", per_exit=True)
#: the curves of a comparison: a row's test_acc and train_loss are its last exit's
LAST_EXIT_TEST_ACC = Metric("test_acc", "last exit's test acc %")


def parse_strategy(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse a strategy spec ``NAME[:key=value,...]`` (``"osgd:granularity=tensor"``, ``"sdn:start=0.1"``).

    The options are the keyword arguments of the strategy's class in :data:`gradgeo.multiexit.STRATEGIES`.

    Example:
        >>> parse_strategy("osgd:granularity=tensor")
        ('osgd', {'granularity': 'tensor'})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a strategy spec is a non-empty string like 'osgd:granularity=tensor', got {spec!r}")
    name = spec.partition(":")[0].strip().lower()
    if name not in STRATEGIES:
        raise ValueError(f"unknown multi-exit strategy {name!r} in {spec!r}; known strategies: {sorted(STRATEGIES)}")
    return parse_options(spec.strip(), tuple(strategy_options(name)), "strategy", spec)


def make_strategy_from_spec(spec: str, flops: list[int]) -> MultiExitStrategy:
    """The strategy a spec names, for exits whose cumulative FLOPs are ``flops``.

    SDN's relative exit depths default to the measured ``flops[k] / flops[-1]`` (its paper uses the fraction
    of the network before each exit) unless the spec gives ``relative_depths``.
    """
    name, options = parse_strategy(spec)
    if name == "sdn" and "relative_depths" not in options:
        options["relative_depths"] = [f / flops[-1] for f in flops[:-1]]
    return make_strategy(name, len(flops), **options)


@dataclasses.dataclass
class AnytimeConfig(TrainConfig):
    """A :class:`~gradgeo.training.config.TrainConfig` for an anytime network, plus the multi-exit strategy.

    Attributes:
        model: an anytime model (:data:`gradgeo.models.ANYTIME_MODELS`; default ``"nested_depth"``) or
            ``"package.module:callable"``, a multi-exit factory of your own.
        val_size: validation images (default 5000), the split on which the early-exit thresholds are chosen; 0
            skips the budgeted evaluation.
        strategy: how the exits' losses make one update (:mod:`gradgeo.multiexit`): ``"sum"``, ``"sdn"``,
            ``"adaloss"``, ``"pcgrad"``, ``"osgd"`` (the default), ``"osgd:granularity=tensor"`` ...
        num_exits: the exits of the network (>= 1, default 4).
    """

    model: str = "nested_depth"
    val_size: int = 5000
    strategy: str = "osgd"
    num_exits: int = 4

    def validate(self) -> AnytimeConfig:
        """Raise a ValueError naming the bad field and the accepted values."""
        super().validate()
        if self.model not in ANYTIME_MODELS and not is_import_path(self.model):
            raise ValueError(f"unknown anytime model {self.model!r}; known anytime models: {', '.join(ANYTIME_MODELS)}")
        if isinstance(self.num_exits, bool) or not isinstance(self.num_exits, int) or self.num_exits < 1:
            raise ValueError(f"num_exits must be an integer >= 1, got {self.num_exits!r}")
        make_strategy_from_spec(self.strategy, list(range(1, self.num_exits + 1)))  # its options, on stand-in FLOPs
        if self.tta != "none":
            raise ValueError("tta (test-time augmentation) is for the classify task; the anytime task evaluates each "
                             "exit on the images as they are: leave it at none")
        return self

    def canonical(self, name: str, value: Any) -> Any:
        """As :meth:`TrainConfig.canonical`; a strategy spec by what it parses to."""
        if name == "strategy" and isinstance(value, str):
            strategy, options = parse_strategy(value)
            return strategy, tuple(sorted(options.items()))
        return super().canonical(name, value)


def _num_exits(model: nn.Module) -> int:
    """How many exits a multi-exit model has: an AnytimeNetwork, or any module with an integer ``num_exits``
    whose forward returns one logits tensor per exit, first exit first."""
    k = getattr(model, "num_exits", None)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"a multi-exit model needs an integer num_exits attribute; {type(model).__name__} has "
                        f"{k!r}")
    return k


@torch.no_grad()
def evaluate_exits(
    model: nn.Module, splits: DatasetSplits, split: str, batch_size: int | None = None, progress: bool = False
) -> tuple[list[float], ExitScores]:
    """Every exit's mean cross-entropy and scores on a split (``"train"``, ``"val"``, ``"test"``), in one pass;
    ``batch_size`` defaults to :func:`~gradgeo.training.engine.eval_batch_size`; ``progress``: a tqdm bar over
    the batches.

    Returns:
        ``(losses, scores)``: ``losses[k]`` is exit k+1's mean loss; ``scores.accuracy()`` its accuracy.
    """
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    loss_sums = torch.zeros(_num_exits(model), dtype=torch.float64)
    parts = []
    loader = splits.loader(split, batch_size, shuffle=False, dtype=dtype)
    for x, y in progress_bar(loader.epoch(0), len(loader), f"evaluating {split}", progress):
        outputs = model(x)
        loss_sums += torch.stack([nn.functional.cross_entropy(o.float(), y, reduction="sum") for o in outputs]).cpu()
        parts.append(ExitScores.from_logits(outputs, y))
    model.train(was_training)
    scores = ExitScores.cat(parts)
    return (loss_sums / scores.correct.shape[1]).tolist(), scores


def _percent(values: list[float]) -> str:
    return " ".join(f"{v * 100:6.2f}" for v in values)


class MultiExitObjective(Objective):
    """Per-exit cross-entropy losses of one forward pass, combined into ``p.grad`` by a multi-exit strategy.

    Rows hold ``train_exit_loss``, ``train_exit_acc``, ``val_exit_acc``, ``test_exit_loss`` and
    ``test_exit_acc`` (one value per exit, first exit first); ``train_loss``, ``train_acc``, ``val_acc``,
    ``test_loss`` and ``test_acc`` are the last exit's, so that tools reading plain runs read these too.

    Under DDP the strategy averages the ranks' per-exit gradients itself (``process_group``, see
    :meth:`gradgeo.multiexit.MultiExitStrategy.backward`): every strategy steps as one process would on the
    whole batch.

    Args:
        model: the anytime network being trained.
        strategy: how the per-exit losses become a gradient (:mod:`gradgeo.multiexit`).
        flops: the cumulative FLOPs per image at each exit (:func:`gradgeo.models.exit_flops`).
        label_smoothing: of every exit's cross-entropy.
    """

    reduces_gradients = True  # the strategy averages the per-exit gradients over the ranks before combining them

    def __init__(
        self, model: AnytimeNetwork, strategy: MultiExitStrategy, flops: list[int], label_smoothing: float = 0.0
    ) -> None:
        if strategy.num_exits != model.num_exits or len(flops) != model.num_exits:
            raise ValueError(f"the model has {model.num_exits} exits, the strategy {strategy.num_exits} and the "
                             f"FLOP table {len(flops)}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.strategy = strategy
        self.flops = list(flops)
        self.label_smoothing = label_smoothing
        self._sums: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._scores: dict[str, ExitScores] = {}  # of the latest evaluation, reused by result_fields
        label = f"test acc % at exits 1..{model.num_exits}"
        self._width = max(len(label), 7 * model.num_exits - 1)
        self.header = f"{'epoch':>5} {'train loss (last exit)':>22} {'val acc %':>9} {label:>{self._width}} " \
                      f"{'lr':>9} {'time s':>7}"

    def backward(self, output: list[torch.Tensor], y: torch.Tensor, progress: float) -> None:
        losses = [nn.functional.cross_entropy(o, y, label_smoothing=self.label_smoothing) for o in output]
        with torch.no_grad():
            losses_now = torch.stack([loss.detach() for loss in losses]) * len(y)
            correct_now = torch.stack([(o.argmax(1) == y).sum() for o in output])
        self.strategy.backward(losses, self.params, progress=progress, process_group=self.context.group)
        loss_sum, correct, seen = self._sums or (0, 0, 0)
        self._sums = (loss_sum + losses_now, correct + correct_now, seen + len(y))

    def train_metrics(self) -> dict[str, Any]:
        loss_sum, correct, seen = (self.context.sum(s) for s in self._taken_sums(self._sums))
        self._sums = None
        losses, accuracies = (loss_sum / seen).tolist(), (correct / seen).tolist()
        return {"train_loss": losses[-1], "train_acc": accuracies[-1], "train_exit_loss": losses,
                "train_exit_acc": accuracies}

    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        row: dict[str, Any] = {"val_acc": None}
        self._scores = {}
        if splits.val_y is not None:
            self._scores["val"] = evaluate_exits(model, splits, "val", progress=self.show_progress)[1]
            row["val_exit_acc"] = self._scores["val"].accuracy()
            row["val_acc"] = row["val_exit_acc"][-1]
        losses, self._scores["test"] = evaluate_exits(model, splits, "test", progress=self.show_progress)
        accuracies = self._scores["test"].accuracy()
        row.update(test_loss=losses[-1], test_acc=accuracies[-1], test_exit_loss=losses, test_exit_acc=accuracies)
        return row

    def format_row(self, row: dict[str, Any]) -> str:
        val = f"{row['val_acc'] * 100:9.2f}" if row.get("val_acc") is not None else f"{'-':>9}"
        return (f"{row['epoch']:>5} {row['train_loss']:>22.4f} {val} {_percent(row['test_exit_acc']):>{self._width}} "
                f"{row['lr']:>9.2e} {row['time']:>7.1f}")

    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state["strategy"])

    def result_fields(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """``exit_flops`` and, with a validation split, ``early_exit``: the rows of
        :func:`~gradgeo.tasks.anytime.budget.budgeted_evaluation` (thresholds chosen on validation)."""
        fields: dict[str, Any] = {"exit_flops": self.flops}
        if splits.val_y is not None:
            # fit() asks right after the last epoch's evaluation of the same model, unless a finished run resumed
            val, test = (self._scores[split] if split in self._scores
                         else evaluate_exits(model, splits, split)[1] for split in ("val", "test"))
            fields["early_exit"] = budgeted_evaluation(val, test, self.flops)
        return fields


def train_anytime(config: AnytimeConfig, out_dir: str | os.PathLike[str] | None = None,
                  **options: Any) -> list[dict[str, Any]]:
    """Train an anytime network with a multi-exit strategy; files as :func:`gradgeo.training.engine.train`.

    Every step runs one forward pass, computes the K per-exit cross-entropy losses and hands them to the
    strategy of ``config.strategy`` (which computes each exit's gradient on that one graph and writes the
    combined direction into ``p.grad``); then the optimizer of ``config.optimizer`` steps.

    Args:
        config: the run's hyper-parameters, including ``strategy`` and ``num_exits``.
        out_dir, options: as in :meth:`gradgeo.tasks.Task.train` (``resume``, ``progress``, ``log``, ``splits``,
            ``stop_after``).

    Returns:
        One dict per epoch, with per-exit lists ``train_exit_loss``, ``train_exit_acc``, ``val_exit_acc``
            (with a validation split), ``test_exit_loss``, ``test_exit_acc`` besides the fields of a plain run
            (which hold the last exit's values).

    Example:
        >>> config = AnytimeConfig(model="branched_resnet10", strategy="osgd", optimizer="sgd+sobolev:lam=0.1",
        ...                        epochs=1, train_size=1000, val_size=500)
        >>> history = train_anytime(config, "runs/anytime")  # doctest: +SKIP
        >>> history[-1]["test_exit_acc"]  # doctest: +SKIP
        [0.71, 0.78, 0.8, 0.81]
    """
    return ANYTIME.train(config, out_dir, **options)


def _builder(config: AnytimeConfig, splits: DatasetSplits, log: Callable[[str], None] | None) -> Builder:
    image_size = splits.image_shape[1:]

    def build(model_args: dict[str, int]) -> tuple[nn.Module, Objective]:
        model = build_anytime_model(config.model, num_exits=config.num_exits, **model_args, **config.model_kwargs())
        flops = exit_flops(model, (model_args["in_channels"], *image_size))
        strategy = make_strategy_from_spec(config.strategy, flops)
        return model, MultiExitObjective(model, strategy, flops, config.label_smoothing)

    return build


#: the ``anytime`` task: a comparison varies the multi-exit strategy (``gradgeo compare --task anytime sum osgd``)
ANYTIME = Task("anytime", AnytimeConfig, _builder, (EXIT_TEST_ACC,), ANYTIME_MODELS,
               model_kind="an anytime model", imports_models=True, compared="strategy",
               label_name="method", summary="exits", curves=(LAST_EXIT_TEST_ACC,),
               loss_label="last exit's training loss", artefacts=write_accuracy_vs_flops,
               artefact_names=("accuracy_vs_flops.png",),
               outputs="metrics, checkpoint and result.json (exit FLOPs, early exit)")
