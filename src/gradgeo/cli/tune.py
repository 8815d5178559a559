"""``gradgeo tune`` and the ``--storage`` options of ``gradgeo compare`` (issue 13).

Registered by :func:`gradgeo.cli.main.build_parser`. Nothing here imports Optuna: the commands import
:mod:`gradgeo.experiments` when they run, which names ``pip install 'gradgeo[tune]'`` when the extra is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradgeo.cli.options import add_task_arguments

__all__ = ["add_storage_arguments", "add_tune_parser"]


def add_storage_arguments(parser: argparse.ArgumentParser, *, compare: bool) -> None:
    """``--storage``, ``--study`` and ``--heartbeat``."""
    if compare:
        parser.add_argument("--storage", metavar="URL", nargs="?", const="",
                            help="run the grid as queued trials of an Optuna study in this database, e.g. "
                                 "postgresql+psycopg://USER:PASSWORD@HOST/DB (without URL: the SQLite file "
                                 "OUT/study.db): start the same command in any number of processes, on any machines "
                                 "that share --out; each takes one run at a time, none runs twice, and each prints "
                                 "the summary when the grid is done (needs gradgeo[tune])")
    else:
        parser.add_argument("--storage", metavar="URL",
                            help="the Optuna storage shared by all workers, e.g. "
                                 "postgresql+psycopg://USER:PASSWORD@HOST/DB (default: the SQLite file OUT/study.db)")
    parser.add_argument("--study", metavar="NAME", help="the study name in the storage (default: the name of the "
                                                        "--out folder)")
    parser.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                        help="a running trial's sign of life; one silent for 3 heartbeats is taken for dead and "
                             "queued again, to resume from its checkpoint (default: 30)")


def _cmd_tune(args: argparse.Namespace) -> None:
    from gradgeo.cli.options import task_config
    from gradgeo.experiments.tune import tune

    task, config = task_config(args)
    tune(task, args.specs, config, args.out, trials=args.trials, timeout=args.timeout, lr_range=args.lr_range,
         strength_range=args.strength_range, weight_decay_range=args.weight_decay_range, storage=args.storage,
         study=args.study, sampler_seed=args.sampler_seed, startup_trials=args.startup_trials, prune=args.prune,
         prune_after=args.prune_after, heartbeat=args.heartbeat, log=print, progress=False if args.quiet else None)
    print(f"trials.json and trials.csv per spec, summary.json, summary.csv, history.png and lr_strength.png in "
          f"{args.out}")


def add_tune_parser(sub: argparse._SubParsersAction) -> None:
    """The ``tune`` command."""
    p = sub.add_parser(
        "tune", help="tune lr and the metric's strength on the validation split (Optuna)",
        description="For each optimizer spec, search the numbers it leaves open on log scales: the learning rate "
                    "(--lr / 10 to x 10), the metric's strength (lam; sigma for laplacian) and, with "
                    "--weight-decay-range, the weight decay; an option written in the spec is fixed. Trials are "
                    "scored by the final epoch's validation metric (never the test set), proposed by TPE with a "
                    "fixed seed, and pruned by the median rule after --startup-trials. Every spec gets the same "
                    "budget. Running the same command again continues the studies; more processes pointed at one "
                    "--storage share them. Needs gradgeo[tune].")
    p.add_argument("specs", nargs="+", help="optimizer specs to tune, e.g. sgd sgd+h0 sgd+sobolev")
    add_task_arguments(p)
    p.add_argument("--trials", type=int, help="trials per spec, over all workers")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="this worker starts no trial of a spec after "
                                                                      "this many seconds on it")
    p.add_argument("--lr-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="default: --lr / 10, --lr * 10")
    p.add_argument("--strength-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="default: h0 1..100, sobolev 0.003..0.3, h1 1e-4..1e-2, laplacian (sigma) 0.1..10")
    p.add_argument("--weight-decay-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="search the weight decay too, in this range (e.g. 5e-5 5e-3)")
    p.add_argument("--startup-trials", type=int, default=10, help="random trials, never pruned, before TPE "
                                                                   "proposes and pruning starts (default: 10)")
    p.add_argument("--sampler-seed", type=int, default=0, help="the TPE seed (default: 0)")
    p.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                   help="stop trials below the median of earlier trials at the same epoch (default: on)")
    p.add_argument("--prune-after", type=int, metavar="EPOCH", help="stop no trial before this epoch (default: half "
                                                                    "the epochs: early epochs of a decaying "
                                                                    "schedule say little about the last)")
    add_storage_arguments(p, compare=False)
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="output folder (default: runs/tune)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no line per finished epoch of a trial")
    p.set_defaults(run=_cmd_tune)
