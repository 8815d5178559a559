"""The ``gradgeo anytime`` command group: ``anytime train`` and ``anytime compare``.

Registered by :func:`gradgeo.cli.build_parser` through :func:`add_anytime_parser`; the options are those of
``gradgeo train`` / ``gradgeo compare`` (one per :class:`~gradgeo.anytime.AnytimeConfig` field) plus
``--strategy`` and ``--num-exits``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gradgeo.anytime.training import AnytimeConfig
from gradgeo.cli import _add_config_arguments, _add_grid_arguments, _config, _is_main, _seeds, add_log_argument
from gradgeo.models import ANYTIME_MODELS
from gradgeo.multiexit import STRATEGIES

__all__ = ["add_anytime_parser"]

_HELP = {
    "model": ", ".join(ANYTIME_MODELS),
    "strategy": f"multi-exit training method: {', '.join(STRATEGIES)}, with options as in osgd:granularity=tensor",
    "num_exits": "number of exits (stages) of the anytime network",
    "val_size": "validation images carved from the training set; the early-exit thresholds are chosen on them "
                "(0: no budgeted evaluation)",
}


def _cmd_train(args: argparse.Namespace) -> None:
    from gradgeo.anytime.training import train_anytime

    train_anytime(_config(args, AnytimeConfig), args.out, resume=args.resume,
                  progress=False if args.quiet else None, log=None if args.quiet else print,
                  tensorboard=args.log == "tensorboard")
    if _is_main():
        print(f"metrics, checkpoint and result.json (exit FLOPs, early exit) in {args.out}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from gradgeo.anytime.compare import compare_anytime

    compare_anytime(args.methods, _seeds(args), _config(args, AnytimeConfig), args.out, jobs=args.jobs,
                    progress=False if args.quiet else None, tensorboard=args.log == "tensorboard")
    if _is_main():
        print(f"summary.json, summary.csv, accuracy_vs_flops.png and curves.png in {args.out}")


def add_anytime_parser(sub: Any) -> None:
    """Add ``anytime train`` and ``anytime compare`` to the subcommands ``sub`` of the ``gradgeo`` parser."""
    group = sub.add_parser("anytime", help="anytime (multi-exit) networks: train, compare",
                           description="Train anytime networks with a multi-exit method (OSGD, summed loss, SDN, "
                                       "ADALOSS, PCGrad) and compare the methods per exit.")
    commands = group.add_subparsers(dest="anytime_command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train one anytime run",
                            description="Train one anytime network; prints per-exit test accuracy every epoch. "
                                        "Data-parallel (DDP) under torchrun --nproc-per-node N, as gradgeo train.")
    _add_config_arguments(p, AnytimeConfig, _HELP)
    p.add_argument("--out", type=Path, default=Path("runs/anytime-train"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no table, no progress bars")
    add_log_argument(p)
    p.set_defaults(run=_cmd_train)

    p = commands.add_parser("compare", help="methods x seeds: per-exit accuracy, FLOPs, early exit, plot",
                            description="Run every method with every seed (resumable), then per-exit test accuracy "
                                        "(mean ± 95%% CI, paired tests against the first method), per-exit FLOPs, "
                                        "early exit under FLOP budgets (thresholds chosen on the validation split) "
                                        "and an accuracy-vs-FLOPs plot.")
    p.add_argument("methods", nargs="+", help="strategy specs, e.g. sum sdn adaloss pcgrad osgd "
                                              "osgd:granularity=tensor; the first is the baseline")
    _add_config_arguments(p, AnytimeConfig, _HELP)
    _add_grid_arguments(p, Path("runs/anytime-compare"))
    add_log_argument(p)
    p.set_defaults(run=_cmd_compare)
