"""The ``gradgeo`` command line: ``train``, ``compare`` (``--task classify|segment|gan``), ``analyze``, ``demo`` and
``anytime train|compare``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradgeo import ddp
from gradgeo.engine import TrainConfig
from gradgeo.extras import MissingExtraError, missing

__all__ = ["main"]

_HELP = {
    "dataset": "fashion-mnist, mnist, cifar10 or cifar100",
    "data_dir": "folder with the dataset files (default: the standard places, see README)",
    "model": "small_cnn, resnet20/32/56, vgg11/16",
    "width": "channel width multiplier",
    "optimizer": "optimizer spec, e.g. sgd, sgd+sobolev:lam=0.1, adam:lr=1e-3+h0:lam=2",
    "batch_size": "images per step; under torchrun the global batch, split evenly over the processes",
    "schedule": "cosine, step or constant",
    "augment": "random crop + flip (default: on for CIFAR)",
    "train_size": "train on a stratified subset of this many images",
    "val_size": "carve this many training images out as a validation set",
    "compile": "torch.compile the model",
    "precision": "fp32, or bf16: the training forward under bfloat16 autocast (about 2x faster on CPUs with "
                 "AVX512-BF16/AMX and on recent GPUs; evaluation stays fp32)",
    "channels_last": "conv weights and image batches in channels-last (NHWC) memory: faster convolutions on CPU",
    "device": "auto, cpu, cuda, cuda:1, ...",
}
DEMO_SPECS = ("sgd", "sgd+h0:lam=2", "sgd+sobolev:lam=0.1", "sgd+h1:lam=0.01")
LOGS = ("jsonl", "tensorboard")
# what each optional extra is for on the command line, for `gradgeo --help`
_EXTRA_USES = {
    "harness": "compare, demo and anytime compare (statistics, plots), progress bars, train --task gan",
    "tensorboard": "--log tensorboard",
}


def _add_config_arguments(
    parser: argparse.ArgumentParser, config_class: type[TrainConfig] = TrainConfig, helps: dict[str, str] | None = None
) -> None:
    """One option per field of ``config_class``, typed from its annotation, with the field's default."""
    helps = {**_HELP, **(helps or {})}
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        _add_field(parser, field.name, hints[field.name], field.default,
                   helps.get(field.name, "") + f" (default: {field.default})")


def _add_field(parser: argparse.ArgumentParser, name: str, kind: Any, default: Any, help_text: str) -> None:
    """The option of one config field, typed from its annotation."""
    flag = "--" + name.replace("_", "-")
    options = [a for a in typing.get_args(kind) if a is not type(None)] if isinstance(kind, types.UnionType) else [kind]
    if options[0] is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    else:
        parser.add_argument(flag, type=options[0], default=default, help=help_text)


def _config(args: argparse.Namespace, config_class: type[TrainConfig] = TrainConfig) -> TrainConfig:
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)}).validate()


def _add_grid_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options of a comparison over seeds: --seeds, --seed-list, --jobs, --out, --quiet."""
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--seed-list", type=int, nargs="+", help="explicit seeds instead of --seeds")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default: 1)")
    parser.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log``: metrics.jsonl always; ``tensorboard`` adds TensorBoard events to every run folder."""
    parser.add_argument("--log", choices=LOGS, default="jsonl",
                        help="jsonl (default): metrics.jsonl in each run folder; tensorboard: also TensorBoard events "
                             "in its tensorboard/ folder, with the metric strength and the gradient norms before "
                             "and after the transform (needs gradgeo[tensorboard])")


def _extras_epilog() -> str:
    lines = ["optional extras (pip install 'gradgeo[EXTRA]'):"]
    for extra, uses in _EXTRA_USES.items():
        gone = missing(extra)
        state = f"MISSING {', '.join(gone)}: pip install 'gradgeo[{extra}]'" if gone else "installed"
        lines.append(f"  {extra:<12} for {uses} [{state}]")
    return "\n".join(lines)


def _seeds(args: argparse.Namespace) -> list[int]:
    return args.seed_list if args.seed_list else list(range(args.seeds))


def _cmd_train(args: argparse.Namespace) -> None:
    from gradgeo.task_cli import task_config

    task, config = task_config(args)
    task.train(config, args.out, resume=args.resume, progress=False if args.quiet else None,
               log=None if args.quiet else print, tensorboard=args.log == "tensorboard")
    if _is_main():
        print(f"{task.outputs} in {args.out}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from gradgeo.task_cli import task_config
    from gradgeo.tasks import compare_task

    task, config = task_config(args)
    compare_task(task, args.specs, _seeds(args), config, args.out, jobs=args.jobs,
                 progress=False if args.quiet else None, tensorboard=args.log == "tensorboard")
    if _is_main():
        print(f"summary.json, summary.csv{', samples.png' if task.name == 'gan' else ''} and curves.png in {args.out}")


def _is_main() -> bool:
    """Outside torchrun, or rank 0 under it: the process that prints."""
    env = ddp.torchrun_env()
    return env is None or env[0] == 0


def _cmd_demo(args: argparse.Namespace) -> None:
    from gradgeo.compare import compare

    config = TrainConfig(dataset="fashion-mnist", data_dir=args.data_dir, model="small_cnn", epochs=args.epochs,
                             train_size=args.train_size, batch_size=64, lr=0.05)
    print(f"gradgeo demo: {len(DEMO_SPECS)} optimizers x {args.seeds} seeds, small CNN, Fashion-MNIST "
          f"({args.train_size} training images, {args.epochs} epochs, batch 64)")
    compare(DEMO_SPECS, list(range(args.seeds)), config, args.out, jobs=args.jobs, progress=False)
    print(f"summary.json, summary.csv and curves.png in {args.out}")


def _cmd_analyze(args: argparse.Namespace) -> None:
    from gradgeo.analyze import analyze_checkpoint

    report = analyze_checkpoint(args.checkpoint, batches=args.batches)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'layer':<28} {'shape':<18} {'adj corr out':>12} {'adj corr in':>11} {'|corr| out':>10} "
          f"{'|corr| in':>9}")
    for r in report["correlation"]:
        print(f"{r['layer']:<28} {'x'.join(map(str, r['shape'])):<18} {r['adjacent_out']:>12.3f} "
              f"{r['adjacent_in']:>11.3f} {r['all_pairs_out']:>10.3f} {r['all_pairs_in']:>9.3f}")
    print(f"\nstochastic gradient of the conv weights over {args.batches} batches (relative variance, lower is "
          "less noisy)")
    for r in report["gradient_noise"]:
        print(f"  {r['metric']:<10} lam {r['lam']:<6g} {r['relative_variance']:.4f}")


def build_parser() -> argparse.ArgumentParser:
    from gradgeo.task_cli import add_task_arguments  # here, not at the top: it imports this module

    parser = argparse.ArgumentParser(prog="gradgeo", description="Channel-directed gradients and OSGD for CNNs.",
                                     epilog=_extras_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run (--task classify, segment or gan)",
                       description="Train one run; prints a per-epoch table. Data-parallel (DDP) under torchrun "
                                   "--nproc-per-node N, e.g. torchrun --nproc-per-node 2 -m gradgeo.cli train ... "
                                   "(not --task gan).")
    add_task_arguments(p)
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no table, no progress bars")
    add_log_argument(p)
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("compare", help="optimizer specs x seeds, with a table and a plot",
                       description="Run every spec with every seed (resumable), then a table of mean ± 95%% CI "
                                   "and a paired test against the first spec. --task segment reports test mean IoU "
                                   "and pixel accuracy, --task gan the Frechet distance (lower is better) and the "
                                   "classifier score of gradgeo's own Fashion-MNIST classifier (not Inception).")
    p.add_argument("specs", nargs="+", help="optimizer specs; the first is the baseline")
    add_task_arguments(p)
    _add_grid_arguments(p, Path("runs/compare"))
    add_log_argument(p)
    p.set_defaults(run=_cmd_compare)

    p = sub.add_parser("analyze", help="channel correlations and gradient noise of a checkpoint")
    p.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by gradgeo train or compare")
    p.add_argument("--batches", type=int, default=8, help="mini-batches for the gradient noise (default: 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=_cmd_analyze)

    p = sub.add_parser("demo", help="a short comparison on Fashion-MNIST (a few minutes on 2 CPU cores)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.set_defaults(run=_cmd_demo)

    from gradgeo.anytime.cli import add_anytime_parser  # here, not at the top: it imports this module

    add_anytime_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
        ddp.shutdown()  # under torchrun: leave the process group that the command joined, all ranks together
    except (ValueError, FileNotFoundError, MissingExtraError) as error:  # includes DatasetNotFoundError
        print(f"gradgeo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
