"""The ``gradgeo`` command line: ``train``, ``compare`` (``--task classify|segment|gan|anytime``), ``analyze``,
``evaluate`` (a checkpoint's accuracy under any test-time augmentation), ``demo``, ``list`` (what the options
accept), ``data fetch`` (download the built-in datasets), and ``anytime train|compare``, short for ``train --task
anytime`` and ``compare --task anytime``."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradgeo.cli.data import add_data_parser
from gradgeo.cli.listing import add_list_parser
from gradgeo.cli.options import (
    add_grid_arguments,
    add_log_argument,
    add_task_arguments,
    extras_epilog,
    seeds,
    task_config,
)
from gradgeo.cli.tune import add_storage_arguments, add_tune_parser
from gradgeo.experiments import compare_task
from gradgeo.tasks import TASKS
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig
from gradgeo.training.extras import MissingExtraError
from gradgeo.training.objective import TTA_LEVELS
from gradgeo.training.prepare import out_of_memory

__all__ = ["build_parser", "main"]

DEMO_SPECS = ("sgd", "sgd+h0:lam=2", "sgd+sobolev:lam=0.1", "sgd+h1:lam=0.01")


def _cmd_train(args: argparse.Namespace) -> None:
    task, config = task_config(args)
    task.train(config, args.out, resume=args.resume, progress=False if args.quiet else None,
               log=None if args.quiet else print, tensorboard=args.log == "tensorboard")
    if _is_main() and not args.quiet:
        print(f"{task.outputs} in {args.out}")


def _cmd_compare(args: argparse.Namespace) -> None:
    task, config = task_config(args)
    compare_task(task, args.labels, seeds(args), config, args.out, jobs=args.jobs,
                 progress=False if args.quiet else None, storage=getattr(args, "storage", None),
                 study=getattr(args, "study", None), heartbeat=getattr(args, "heartbeat", 30),
                 tensorboard=args.log == "tensorboard")
    if _is_main():
        print(f"{', '.join(['summary.json', 'summary.csv', *task.artefact_names])} and curves.png in {args.out}")


def _is_main() -> bool:
    """Outside torchrun, or rank 0 under it: the process that prints."""
    env = ddp.torchrun_env()
    return env is None or env[0] == 0


def _cmd_demo(args: argparse.Namespace) -> None:
    config = TrainConfig(dataset="fashion-mnist", data_dir=args.data_dir, model="small_cnn", epochs=args.epochs,
                             train_size=args.train_size, batch_size=64, lr=0.05)
    print(f"gradgeo demo: {len(DEMO_SPECS)} optimizers x {args.seeds} seeds, small CNN, Fashion-MNIST "
          f"({args.train_size} training images, {args.epochs} epochs, batch 64)")
    compare_task("classify", DEMO_SPECS, list(range(args.seeds)), config, args.out, jobs=args.jobs)
    print(f"summary.json, summary.csv and curves.png in {args.out}")


def _cmd_analyze(args: argparse.Namespace) -> None:
    from gradgeo.experiments.analyze import analyze_checkpoint, format_report

    report = analyze_checkpoint(args.checkpoint, batches=args.batches)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from gradgeo.experiments.analyze import evaluate_checkpoints, format_evaluation

    rows = evaluate_checkpoints(args.checkpoints, split=args.split, tta=args.tta, data_dir=args.data_dir)
    print(json.dumps(rows, indent=2) if args.json else format_evaluation(rows))


def _add_train(sub: Any, name: str, out: str, only: Any = None, **texts: str) -> None:
    p = sub.add_parser(name, **texts)
    add_task_arguments(p, only)
    p.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no table, no progress bars")
    add_log_argument(p)
    p.set_defaults(run=_cmd_train)


def _add_compare(sub: Any, name: str, out: str, labels_help: str, only: Any = None, **texts: str) -> None:
    p = sub.add_parser(name, **texts)
    p.add_argument("labels", nargs="+", metavar="LABEL", help=labels_help)
    add_task_arguments(p, only)
    add_grid_arguments(p, Path(out))
    add_storage_arguments(p, compare=True)
    add_log_argument(p)
    p.set_defaults(run=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    """The one parser tree of the ``gradgeo`` command."""
    parser = argparse.ArgumentParser(prog="gradgeo", description="Channel-directed gradients and OSGD for CNNs.",
                                     epilog="gradgeo list: the metrics, optimizers, models, datasets, tasks and "
                                            "strategies to choose from, with their options\n\n" + extras_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gradgeo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_train(sub, "train", "runs/train", help="train one run (--task classify, segment, gan or anytime)",
               description="Train one run; prints a per-epoch table. Data-parallel (DDP) under torchrun "
                           "--nproc-per-node N, e.g. torchrun --nproc-per-node 2 -m gradgeo.cli train ... "
                           "(not --task gan).")
    _add_compare(sub, "compare", "runs/compare", "optimizer specs (--task anytime: multi-exit strategies, e.g. sum "
                 "sdn adaloss pcgrad osgd osgd:granularity=tensor); the first is the baseline",
                 help="optimizer specs (or multi-exit methods) x seeds, with a table and a plot",
                 description="Run every spec with every seed (resumable), then a table of mean ± 95% CI "
                             "and a paired test against the first spec. --task segment reports test mean IoU "
                             "and pixel accuracy, --task gan the Frechet distance (lower is better) and the "
                             "classifier score of gradgeo's own Fashion-MNIST classifier (not Inception), "
                             "--task anytime compares multi-exit methods per exit, with per-exit FLOPs, early "
                             "exit under FLOP budgets (thresholds chosen on the validation split) and an "
                             "accuracy-vs-FLOPs plot.")

    add_tune_parser(sub)

    p = sub.add_parser("analyze", help="channel correlations and gradient noise of a checkpoint")
    p.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by gradgeo train or compare")
    p.add_argument("--batches", type=int, default=8, help="mini-batches for the gradient noise (default: 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=_cmd_analyze)

    p = sub.add_parser("evaluate", help="accuracy of classification checkpoints, under any test-time augmentation",
                       description="Evaluate the model of each checkpoint.pt on a split of its run's own data, "
                                   "beside what the run recorded there after its last epoch: e.g. --tta "
                                   "flip-translate on runs trained with --tta flip measures what the translated "
                                   "views add.")
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="checkpoint",
                   help="checkpoint.pt files written by gradgeo train or compare (--task classify)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="default: test")
    p.add_argument("--tta", choices=TTA_LEVELS, default=None,
                   help="test-time augmentation (default: each run's own)")
    p.add_argument("--data-dir", default=None, help="the dataset's folder, if not where the runs read it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("demo", help="a short comparison on Fashion-MNIST (a few minutes on 2 CPU cores)",
                       description=f"Compare {', '.join(DEMO_SPECS)} on Fashion-MNIST (small CNN, batch 64): "
                                   "the table of gradgeo compare and its curves.png.")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every run (default: 3)")
    p.add_argument("--train-size", type=int, default=10000,
                   help="training images, a stratified subset (default: 10000)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per optimizer; 3 or more draw CI bands (default: 2)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel processes (default: 2)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="the comparison folder (default: runs/demo)")
    p.set_defaults(run=_cmd_demo)

    add_list_parser(sub)
    add_data_parser(sub)

    group = sub.add_parser("anytime", help="anytime (multi-exit) networks: train, compare (= --task anytime)",
                           description="Short for gradgeo train --task anytime and gradgeo compare --task anytime: "
                                       "train anytime networks with a multi-exit method (OSGD, summed loss, SDN, "
                                       "ADALOSS, PCGrad) and compare the methods per exit.")
    commands = group.add_subparsers(dest="anytime_command", required=True, metavar="COMMAND")
    anytime = TASKS["anytime"]
    _add_train(commands, "train", "runs/anytime-train", anytime, help="train one anytime run",
               description="Train one anytime network; prints per-exit test accuracy every epoch. "
                           "Data-parallel (DDP) under torchrun --nproc-per-node N, as gradgeo train.")
    _add_compare(commands, "compare", "runs/anytime-compare", "strategy specs, e.g. sum sdn adaloss pcgrad osgd "
                 "osgd:granularity=tensor; the first is the baseline", anytime,
                 help="methods x seeds: per-exit accuracy, FLOPs, early exit, plot",
                 description="Run every method with every seed (resumable), then per-exit test accuracy "
                             "(mean ± 95% CI, paired tests against the first method), per-exit FLOPs, "
                             "early exit under FLOP budgets (thresholds chosen on the validation split) "
                             "and an accuracy-vs-FLOPs plot.")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradgeo")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue the interrupted command: train commands need --resume, comparisons always resume."""
    return "run the same command with --resume to continue" if hasattr(args, "resume") else \
        "run the same command again to resume"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; a user error (bad value, missing or unwritable file, full disk, a diverged run,
    sizes beyond the memory) prints one line and returns 2, an interruption returns 130; any other exception
    is a bug and propagates with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
        sys.stdout.flush()  # here, so that a reader that went away (gradgeo list | head) is met below
        ddp.shutdown()  # under torchrun: leave the process group that the command joined, all ranks together
    except BrokenPipeError:  # the reader of stdout closed it: stop quietly, as head and grep expect
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    # a bad value, a corrupt file, a diverged run; ModuleNotFoundError: an optional extra, named in the message
    except (ValueError, FloatingPointError, ModuleNotFoundError, MissingExtraError) as error:
        print(f"gradgeo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a missing file or dataset, an --out under a file, a full disk ...
        hint = f"; free some space, then {_resume_hint(args)}" if error.errno == errno.ENOSPC else ""
        print(f"gradgeo {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:  # sizes beyond this machine's memory; any other: a bug
        if not out_of_memory(error):
            raise
        text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", text)  # the allocator's source line
        print(f"gradgeo {args.command}: error: out of memory ({detail}): lower --batch-size, --width or the task's "
              "sizes (with a new --out folder), or use a device with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
