"""Tune the learning rate and the channel metric's strength together on the validation split, with Optuna.

For each optimizer spec (``sgd``, ``sgd+h0``, ``adam+sobolev:boundary=periodic`` ...) one Optuna study searches, on
log scales, every number the spec leaves open: the learning rate (default range: the config's ``lr`` / 10 to x 10),
the options its metric declares a search range for (the strength ``lam``, or ``sigma`` for ``laplacian``, of a
built-in metric; see :class:`~gradgeo.channel.registry.MetricOption`) and, when asked, the weight decay. An option
the spec writes (``sgd:lr=0.1+h0``) is fixed, not searched. Each trial trains one run of the task
(:mod:`gradgeo.tasks`) with the values rounded to 3 significant digits, so the spec string a trial reports
reproduces it exactly, and is scored by the final epoch's validation metric (the validation counterpart of the
task's headline metric: ``val_acc``, ``val_miou``, ``val_fd``); a trial is a normal run, so its metrics file also
logs the test metrics each epoch, but nothing here reads them.

Sampler: multivariate TPE (the learning rate and the strength interact) whose random draws depend only on the
sampler seed, the trial number and the parameter, so a resumed study or a second worker never repeats the first
trials' points. The first ``startup_trials`` trials are random and run to the end; after them the median rule
stops (prunes) a trial whose validation metric after an epoch is worse than the median of the earlier trials at
that epoch, from epoch ``prune_after`` on (default: half the epochs; a high learning rate trails early in a
decaying schedule and catches up late). A trial whose training diverges (a non-finite loss) is pruned, not
failed: it counts as a spent trial.

Fairness, as in optimizer benchmarks with external tuning (DeepOBS, AlgoPerf): every spec gets the same number
of trials, ``trials`` (counted over all workers: a study never runs more; a trial killed with its worker is
retried in its place, not counted twice, and a trial another worker started while the retry was being queued
stops after an epoch as over the budget), and the default ranges all span two decades per searched number; the
tables say how many trials each spec had and the size of its search space.

Resumable and shared: the studies live in ``storage`` (default: the SQLite file ``OUT/study.db``). Running the
same call again continues them; a study created with other settings is refused, naming the difference. Any
number of processes on any number of machines pointed at one storage URL work on the same studies.

Layout of the output folder:

    OUT/study.db                       the embedded storage (without storage=)
    OUT/<spec>/trial-<k>/...           each trial's training run (metrics.jsonl, checkpoint.pt, result.json)
    OUT/<spec>/trials.json, trials.csv every trial: state, parameters, spec string, validation metric per epoch
    OUT/summary.json, OUT/summary.csv  per spec: budget, search space, best trial and its spec string
    OUT/history.png                    each trial's validation metric by trial number, and the best so far
    OUT/lr_strength.png                the trials in the learning rate x strength plane, coloured by the metric
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from gradgeo.experiments.grid import run_dir
from gradgeo.experiments.plots import plot_tuning
from gradgeo.experiments.search_space import (
    _SIGNIFICANT,
    WEIGHT_DECAY_RANGE,
    Dimension,
    SearchSpace,
    edges,
    search_space,
)
from gradgeo.experiments.storage import (
    FrozenTrial,
    Job,
    Lost,
    Surplus,
    TrialState,
    open_storage,
    open_study,
    optuna,
    portable_config,
    shown_url,
    when_free,
    work,
)
from gradgeo.tasks import Metric, Task, get_task
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import _atomic_save
from gradgeo.training.run_folder import write_file

__all__ = ["WEIGHT_DECAY_RANGE", "Dimension", "SearchSpace", "format_tune_table", "search_space",
           "tune"]

def validation_metric(task: Task) -> Metric:
    """The validation counterpart of the task's headline metric (``test_acc`` -> ``val_acc``)."""
    headline = task.metrics[0]
    key = "val_" + headline.key.removeprefix("test_")
    label = headline.label.replace("test", "val") if "test" in headline.label else f"val {headline.label}"
    return dataclasses.replace(headline, key=key, label=label)


class _TrialSeededTPE(optuna.samplers.BaseSampler):
    """Multivariate TPE whose random draws depend on ``(seed, trial number, parameter)`` only: workers that start
    together, or a study resumed in a new process, draw new points instead of the first trials' again, and the
    same trial history gives the same proposals."""

    def __init__(self, seed: int, startup_trials: int) -> None:
        self.seed, self.startup_trials = seed, startup_trials

    def _tpe(self, trial: FrozenTrial, name: str = "") -> optuna.samplers.TPESampler:
        seed = zlib.crc32(f"{self.seed}/{trial.number}/{name}".encode())
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials, multivariate=True)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._tpe(trial, param_name).sample_independent(study, trial, param_name, param_distribution)


def _place(trial: FrozenTrial) -> int:
    """A trial's place in the budget: its number, or for the retry of a killed trial (however many times retried)
    the killed trial's number, which is also its run folder's."""
    return trial.system_attrs.get("failed_trial", trial.number)


def _counted(trials: Sequence[FrozenTrial], budget: int | None) -> list[FrozenTrial]:
    """The trials that spend the budget: every trial that did not fail, first come first, at most ``budget``. A
    retry comes in the place of the trial it retries, before any trial started while it was being queued (the
    worker that finds a dead trial fails it, then queues it again: meanwhile another worker may see budget left)."""
    alive = sorted((t for t in trials if t.state != TrialState.FAIL), key=_place)
    return alive if budget is None else alive[:budget]


def tune(
    task: str | Task,
    specs: Sequence[str],
    base: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    trials: int | None = None,
    timeout: float | None = None,
    lr_range: Sequence[float] | None = None,
    strength_range: Sequence[float] | None = None,
    weight_decay_range: Sequence[float] | None = None,
    storage: str | None = None,
    study: str | None = None,
    sampler_seed: int = 0,
    startup_trials: int = 10,
    prune: bool = True,
    prune_after: int | None = None,
    heartbeat: int = 30,
    log: Callable[[str], None] | None = print,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Tune each spec's open numbers on the validation split (see the module docstring), then write and return
    the summary.

    Args:
        task: a task name (``"classify"``, ``"segment"``, ``"gan"``) or a :class:`~gradgeo.tasks.Task`.
        specs: optimizer specs to tune, each in its own study with the same budget.
        base: the shared configuration, of the task's ``config_class``; needs ``val_size > 0``.
        out_dir: the output folder.
        trials: trials per spec, over all workers (None: only ``timeout`` limits).
        timeout: seconds after which this worker starts no trial (per spec: each gets the same time).
        lr_range, strength_range, weight_decay_range: search ranges (see :func:`search_space`).
        storage: a database URL shared by all workers (default: the SQLite file ``OUT/study.db``).
        study: the study name prefix (default: the output folder's name); spec ``S`` is study ``NAME:S``.
        sampler_seed: the TPE seed.
        startup_trials: random trials, never pruned, before TPE proposes and the median rule prunes.
        prune: stop trials that fall below the median (False: every trial runs to the end).
        prune_after: no trial is stopped before this epoch (default: half the epochs, rounded up): a high
            learning rate trails early in a decaying schedule and catches up late, so the early epochs say
            little about the final one.
        heartbeat: seconds between a running trial's heartbeats; silent for three: dead, retried.
        log: receives a line per finished trial and the tables (None: silent) and, unless ``progress`` is False,
            a line per finished epoch of a trial.
        progress: False: no per-epoch lines and no bars; otherwise per-epoch lines, and tqdm bars over each
            epoch's training steps and evaluation (None: bars only on a terminal).

    Returns:
        The summary (also ``OUT/summary.json``): ``metric`` and per spec a row with ``spec``, ``budget``,
            ``search_space`` (``[name, low, high]`` each), ``decades``, ``counted``, ``complete``, ``pruned``,
            ``best`` (the best complete trial, or None) and ``trials`` (every trial).

    Example:
        >>> base = TrainConfig(epochs=15, train_size=5000, val_size=5000, batch_size=32)
        >>> tune("classify", ["sgd", "sgd+h0", "sgd+sobolev"], base, "runs/tune", trials=20)  # doctest: +SKIP
    """
    task = get_task(task) if isinstance(task, str) else task
    if type(base) is not task.config_class:
        raise ValueError(f"the {task.name} task needs a {task.config_class.__name__}, got a {type(base).__name__}")
    base.validate()
    if not specs or len(set(specs)) != len(specs):
        raise ValueError(f"tune needs distinct optimizer specs, got {list(specs)}")
    if trials is None and timeout is None:
        raise ValueError("give a budget: --trials N (per spec) and/or --timeout SECONDS")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ValueError(f"--trials must be a whole number >= 1, got {trials!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout!r}")
    if isinstance(startup_trials, bool) or not isinstance(startup_trials, int) or startup_trials < 0:
        raise ValueError(f"--startup-trials must be a whole number >= 0, got {startup_trials!r}")
    if prune_after is not None and not prune:
        raise ValueError(f"--prune-after {prune_after} has no effect with --no-prune: drop one of the two")
    if prune_after is None:
        prune_after = (base.epochs + 1) // 2
    if isinstance(prune_after, bool) or not isinstance(prune_after, int) or not 1 <= prune_after <= base.epochs:
        raise ValueError(f"--prune-after must be a whole number of epochs from 1 to --epochs ({base.epochs}), got "
                         f"{prune_after!r}; --no-prune runs every trial to the end")
    if not base.val_size:
        raise ValueError("tune scores trials on the validation split, never the test set: pass --val-size N (the "
                         "training images, or scenes, to hold out)")
    if ddp.torchrun_env() is not None:
        raise ValueError("tune runs one trial per process: start more workers (same command, --storage URL) "
                         "instead of torchrun")
    spaces = [search_space(spec, base.lr, lr_range=lr_range, strength_range=strength_range,
                           weight_decay_range=weight_decay_range) for spec in specs]
    metric = validation_metric(task)
    out = Path(out_dir)
    name = study or out.resolve().name
    backend = open_storage(storage, out, heartbeat)
    direction: Literal["minimize", "maximize"] = "maximize" if metric.higher_is_better else "minimize"
    settings = {"task": task.name, "metric": metric.key, "sampler": {"name": "TPE", "seed": sampler_seed,
                "startup_trials": startup_trials}, "prune": prune, "prune_after": prune_after if prune else None,
                "config": portable_config(base)}
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=prune_after) if prune
              else optuna.pruners.NopPruner())
    studies = [open_study(backend, f"{name}:{space.spec}",
                          {**settings, "search_space": [[d.name, d.low, d.high] for d in space.dimensions]},
                          direction=direction, sampler=_TrialSeededTPE(sampler_seed, startup_trials), pruner=pruner)
               for space in spaces]
    if log is not None:
        where = f"study {name!r} in {shown_url(storage)}" if storage else str(out / "study.db")
        log(f"tuning {len(specs)} spec(s) on {task.name}, {trials or 'unlimited'} trials each"
            f"{f', at most {timeout:g} s each' if timeout else ''}; {metric.label} of the final epoch -> {where}")

    shared: dict[str, Any] = {}

    def splits() -> Any:  # loaded once per worker, when its first trial starts
        if "splits" not in shared:
            if task.prepare is not None:
                task.prepare(base, log or (lambda line: None))
            shared["splits"] = task.load(base)
        return shared["splits"]

    def objective_for(space: SearchSpace, study_: optuna.Study) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            def counted(known: Sequence[FrozenTrial]) -> bool:
                return trials is None or trial.number in {t.number for t in _counted(known, trials)}

            def surplus() -> Surplus:
                trial.set_user_attr("note", "over the budget")
                return Surplus(f"trial {trial.number} is over the budget of {trials}")

            known = study_.get_trials(deepcopy=False)
            if not counted(known):  # another worker took the last trial meanwhile
                raise surplus()
            values = {d.name: float(f"{trial.suggest_float(d.name, d.low, d.high, log=True):.{_SIGNIFICANT}g}")
                      for d in space.dimensions}  # what trains is what the spec string says
            spec = space.spec_with(values)
            trial.set_user_attr("spec", spec)
            trial.set_user_attr("values", values)
            frozen = next(t for t in known if t.number == trial.number)
            directory = _spec_dir(out, space.spec) / f"trial-{_place(frozen)}"
            trial.set_user_attr("dir", str(directory.relative_to(out)))

            def stop(reason: str, diverged: Any = None) -> optuna.TrialPruned:
                if diverged is not None:
                    trial.set_user_attr("diverged", diverged)
                if log is not None:
                    log(f"[{space.spec}] trial {trial.number}: {reason} ({spec})")
                return optuna.TrialPruned(reason)

            def on_epoch(row: dict[str, Any]) -> None:
                value, epoch = row[metric.key], row["epoch"]
                now = study_.get_trials(deepcopy=False)
                if next(t for t in now if t.number == trial.number).state != TrialState.RUNNING:
                    raise Lost(f"[{space.spec}] trial {trial.number}: stopped at epoch {epoch}, no longer running: "
                               "another worker failed it while this one was silent for three heartbeats (paused?) "
                               f"and queued it again, to resume from its checkpoint ({spec})")
                if not counted(now):  # a retry queued since took back its place
                    if log is not None:
                        log(f"[{space.spec}] trial {trial.number}: stopped at epoch {epoch}, over the budget ({spec})")
                    raise surplus()
                if not (_finite(row.get("train_loss")) and _finite(value)):
                    raise stop(f"diverged at epoch {epoch}", epoch)
                trial.report(float(value), epoch)
                if log is not None and progress is not False:
                    log(f"[{space.spec}] trial {trial.number}: epoch {epoch}/{base.epochs}, {metric.label} "
                        f"{_show(metric, value)} ({row['time']:.0f} s)")
                if epoch < base.epochs and trial.should_prune():  # the last epoch completes the trial anyway
                    raise stop(f"pruned at epoch {epoch}")

            def train() -> list[dict[str, Any]]:
                return task.train(dataclasses.replace(base, optimizer=spec), directory, resume=True,
                                  progress=progress, log=None, splits=splits(), on_epoch=on_epoch)

            try:
                if "failed_trial" not in frozen.system_attrs:
                    history = train()
                else:  # a retry: the failed trial's worker may be alive, paused, still training it
                    history = when_free(train, f"[{space.spec}] trial {trial.number}: waits for "
                                        f"{directory.relative_to(out)}, still held by the worker of trial "
                                        f"{_place(frozen)} (paused or slow), to resume it from its checkpoint",
                                        poll=min(5, heartbeat), log=log)
            except FloatingPointError as error:  # the channel metric refused a non-finite gradient
                raise stop("diverged", str(error).splitlines()[0]) from None
            value = history[-1][metric.key]
            if not _finite(value):
                raise stop("diverged", len(history))
            return float(value)

        return objective

    def done_for(space: SearchSpace, say: Callable[[str], None]) -> Callable[[FrozenTrial], None]:
        def done(trial: FrozenTrial) -> None:  # once its value is recorded: a retry would print it again
            if trial.state == TrialState.COMPLETE:
                say(f"[{space.spec}] trial {trial.number}: {metric.label} {_show(metric, trial.value)} "
                    f"({trial.user_attrs['spec']})")

        return done

    def wants_trial(trials_: Sequence[FrozenTrial]) -> bool:
        if any(t.state == TrialState.WAITING for t in trials_):
            return True
        return trials is None or sum(t.state != TrialState.FAIL for t in trials_) < trials

    jobs = [Job(s, objective_for(space, s), wants_trial, None if log is None else done_for(space, log))
            for space, s in zip(spaces, studies)]
    if timeout is None:
        work(jobs, heartbeat=heartbeat, log=log)
    else:
        for job in jobs:  # the same time for each spec
            work([job], heartbeat=heartbeat, deadline=time.monotonic() + timeout, log=log)
    summary = summarize_tuning(studies, spaces, metric, trials, out)
    if log is not None:
        log(format_tune_table(summary))
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _spec_dir(out: Path, spec: str) -> Path:
    """``OUT/<spec>``, the spec's folder named as in a comparison folder."""
    return out / run_dir(out, spec, 0).parent.name


def _record(trial: FrozenTrial, counted: bool) -> dict[str, Any]:
    """One trial for the tables and ``trials.json``: its value is the final epoch's for a complete trial and
    the last reported epoch's for a pruned one."""
    steps = sorted(trial.intermediate_values)
    value = trial.value if trial.state == TrialState.COMPLETE else (
        trial.intermediate_values[steps[-1]] if steps else None)
    start, end = trial.datetime_start, trial.datetime_complete
    return {"number": trial.number, "state": trial.state.name.lower(), "counted": counted,
            "spec": trial.user_attrs.get("spec"), "params": trial.user_attrs.get("values", trial.params),
            "value": value,
            "epochs": steps[-1] if steps else 0, "per_epoch": [trial.intermediate_values[s] for s in steps],
            "retry_of": trial.system_attrs.get("failed_trial"),
            "note": trial.user_attrs.get("note") or (f"diverged ({trial.user_attrs['diverged']})"
                                                     if "diverged" in trial.user_attrs else None),
            "seconds": (end - start).total_seconds() if start and end else None,
            "dir": trial.user_attrs.get("dir")}


def summarize_tuning(studies: Sequence[optuna.Study], spaces: Sequence[SearchSpace], metric: Metric,
                     budget: int | None, out: Path) -> dict[str, Any]:
    """The summary of each spec's study (see :func:`tune`); writes ``OUT/<spec>/trials.json`` and ``.csv``,
    ``OUT/summary.json`` and ``.csv``, ``OUT/history.png`` and ``OUT/lr_strength.png``."""
    rows = []
    for study, space in zip(studies, spaces):
        trials = study.get_trials(deepcopy=False)
        counted = {t.number for t in _counted(trials, budget)}
        records = [_record(t, t.number in counted) for t in sorted(trials, key=lambda t: t.number)
                   if t.user_attrs.get("note") != "over the budget"]
        complete = [r for r in records if r["counted"] and r["state"] == "complete"]
        best = (max if metric.higher_is_better else min)(complete, key=lambda r: r["value"]) if complete else None
        rows.append({"spec": space.spec, "budget": budget,
                     "search_space": [[d.name, d.low, d.high] for d in space.dimensions], "decades": space.decades,
                     "counted": len(counted), "complete": len(complete),
                     "pruned": sum(r["counted"] and r["state"] == "pruned" for r in records),
                     "unfinished": sum(r["counted"] and r["state"] in ("running", "waiting") for r in records),
                     "best": best and {k: best[k] for k in ("number", "value", "spec", "params")},
                     "edges": edges(best["params"], [[d.name, d.low, d.high] for d in space.dimensions]) if best
                     else {},
                     "search": space.describe(), "trials": records})
        folder = _spec_dir(out, space.spec)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_save(records, folder / "trials.json")
        names = [d.name for d in space.dimensions]
        _write_csv(folder / "trials.csv", ["number", "state", "counted", *names, "spec", metric.key, "epochs",
                                           "retry_of", "note", "seconds"],
                   [[r["number"], r["state"], r["counted"], *(r["params"].get(n, "") for n in names), r["spec"],
                     r["value"], r["epochs"], r["retry_of"], r["note"], r["seconds"]] for r in records])
    summary = {"metric": dataclasses.asdict(metric), "budget": budget, "rows": rows}
    _atomic_save(summary, out / "summary.json")
    _write_csv(out / "summary.csv", ["spec", "budget", "counted", "complete", "pruned", "search_space", "decades",
                                     f"best_{metric.key}", "best_trial", "best_spec"],
               [[r["spec"], r["budget"], r["counted"], r["complete"], r["pruned"], r["search"], r["decades"],
                 r["best"] and r["best"]["value"], r["best"] and r["best"]["number"], r["best"] and r["best"]["spec"]]
                for r in rows])
    plot_tuning(summary, out)
    return summary


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file written whole or not at all (several workers may write it at once), and not again unchanged."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    write_file(path, text.getvalue().encode())


def _show(metric: Metric, value: float | None) -> str:
    return "-" if value is None else f"{value * metric.scale:.{metric.digits}f}"


def format_tune_table(summary: dict[str, Any]) -> str:
    """Each spec's counted trials (number, state, searched values, validation metric), then one line per spec:
    its trials, search space and best spec string."""
    metric = Metric(**summary["metric"])
    arrow = "higher is better" if metric.higher_is_better else "lower is better"
    lines = []
    for row in summary["rows"]:
        names = [name for name, _, _ in row["search_space"]]
        lines += ["", f"{row['spec']}: {row['counted']} trial(s) of {row['budget'] or 'unlimited'} "
                      f"({row['complete']} complete, {row['pruned']} pruned); {row['search']}",
                  f"{'trial':>5} {'state':<9}" + "".join(f" {n:>12}" for n in names) +
                  f" {metric.label:>14} {'epochs':>6}  note"]
        lines.append("-" * len(lines[-1]))
        for r in row["trials"]:
            if not r["counted"] and r["state"] != "fail":
                continue
            retry = f"retry of {r['retry_of']}" if r["retry_of"] is not None else None
            note = ", ".join(filter(None, [r["note"], retry, "not counted" if r["state"] == "fail" else None]))
            lines.append(f"{r['number']:>5} {r['state']:<9}" + "".join(
                f" {r['params'][n]:>12.4g}" if n in r["params"] else f" {'-':>12}" for n in names) +
                f" {_show(metric, r['value']):>14} {r['epochs']:>6}  {note}")
    width = max(24, *(len(r["spec"]) for r in summary["rows"]))
    lines += ["", f"best {metric.label} ({arrow}) per spec, final epoch, validation split; each spec tuned with the "
                  f"same budget of {summary['budget'] or 'unlimited'} trials",
              f"{'spec':<{width}} {'trials':>6} {'complete':>8} {'pruned':>6} {'decades':>7} {'best':>8}  "
              "best spec (for gradgeo compare)"]
    lines.append("-" * len(lines[-1]))
    for row in summary["rows"]:
        best = row["best"]
        lines.append(f"{row['spec']:<{width}} {row['counted']:>6} {row['complete']:>8} {row['pruned']:>6} "
                     f"{row['decades']:>7g} {_show(metric, best and best['value']):>8}  "
                     f"{best['spec'] if best else '(no complete trial yet)'}")
    for row in summary["rows"]:
        for name, edge in row.get("edges", {}).items():
            low, high = edge["range"]
            flag = {"lr": "--lr-range", "weight_decay": "--weight-decay-range"}.get(name, "--strength-range")
            lines.append(f"note: {row['spec']}'s best {name} {edge['value']:.3g} is at the {edge['edge']} edge of "
                         f"[{low:g}, {high:g}]: its optimum may lie outside; tune it again with {flag} "
                         f"{edge['suggested'][0]:g} {edge['suggested'][1]:g} (or say why that edge is a hard limit)")
    if len({r["counted"] for r in summary["rows"]}) > 1:
        lines.append("note: the specs have different numbers of trials so far: rerun the same command to finish them")
    if len({r["decades"] for r in summary["rows"]}) > 1:
        lines.append("note: the search spaces differ in size (decades = the sum of the log10 ranges searched)")
    return "\n".join(lines).lstrip("\n")
