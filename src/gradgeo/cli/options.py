"""The options of ``gradgeo train`` and ``gradgeo compare`` (and their ``gradgeo anytime`` aliases): ``--task``
and one option per field of every task's configuration class (:data:`gradgeo.tasks.TASKS`), typed from its
annotation. An option left out takes the chosen task's default; one the chosen task does not have is an error
that names the tasks that have it (:func:`gradgeo.tasks.make_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradgeo.models import ANYTIME_MODELS
from gradgeo.multiexit import STRATEGIES
from gradgeo.tasks import TASKS, Task, get_task, make_config
from gradgeo.training.config import TrainConfig
from gradgeo.training.extras import missing

__all__ = ["add_grid_arguments", "add_log_argument", "add_task_arguments", "extras_epilog", "seeds", "task_config"]

_HELP = {
    "dataset": "fashion-mnist, mnist, cifar10, cifar100, or your own: npz:FILE, folder:DIR (DIR/train/CLASS/IMAGE "
               "and DIR/test/CLASS/IMAGE) or package.module:callable (segment: the source of the items; gan: the "
               "images)",
    "data_dir": "folder with the dataset files (default: the standard places, see README)",
    "model": f"classify and anytime: a model of your own as package.module:callable (called with num_classes, "
             f"in_channels and the --model-option values), or classify: small_cnn, resnet20/32/56, vgg11/16, "
             f"airbench; segment: unet; gan: dcgan; anytime: "
             f"{', '.join(ANYTIME_MODELS)}",
    "width": "channel width multiplier of the built-in models, in (0, 64]",
    "model_options": "a keyword argument of the model's constructor or factory (repeatable), e.g. depth=3 "
                     "(default: none)",
    "optimizer": "optimizer spec, e.g. sgd, sgd+sobolev:lam=0.1, adam:lr=1e-3+h0:lam=2",
    "batch_size": "images per step; under torchrun the global batch, split evenly over the processes",
    "schedule": "cosine, step, constant, or triangle (0.2x up to 1x at 23%% of the steps, then down to 0.07x)",
    "crop_padding": "zero padding per side of the random crop (how far it translates)",
    "tta": "classify: test-time augmentation of every evaluation: none, flip (image and mirror image), or "
           "flip-translate (also shifted one pixel: 6 passes an image)",
    "augment": "random crop + flip (default: on for CIFAR)",
    "train_size": "classify, gan, anytime: train on a stratified subset of this many images (default: all of "
                  "them); segment: training scenes (default: 2000)",
    "val_size": "classify, gan: carve this many training images out as a validation set; anytime: the same, and "
                "the early-exit thresholds are chosen on them (0: no budgeted evaluation); segment: validation "
                "scenes (their items held out of the training images)",
    "compile": "torch.compile the model",
    "precision": "fp32, or bf16: the training forward under bfloat16 autocast (about 2x faster on CPUs with "
                 "AVX512-BF16/AMX and on recent GPUs; evaluation stays fp32)",
    "channels_last": "conv weights and image batches in channels-last (NHWC) memory: faster convolutions on CPU",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "test_size": "classify, gan, anytime: evaluate every epoch on a stratified subset of this many test images, "
                 "the same images in every run (default: the whole test set); segment: test scenes, their items "
                 "from the test images only (default: 1000)",
    "canvas": "scene height and width in pixels",
    "min_items": "fewest items in a scene",
    "max_items": "most items in a scene",
    "threshold": "an item covers its pixels brighter than this (of 255); later items lie on top",
    "beta1": "Adam's beta1 unless the spec sets betas=B1/B2",
    "beta2": "Adam's beta2 unless the spec sets betas=B1/B2",
    "latent_dim": "size of the generator's noise vector",
    "eval_samples": "generated images each evaluation measures (Frechet distance, score)",
    "classifier_epochs": "epochs of the cached feature classifier of the GAN measures",
    "label_smoothing": "classify, segment, anytime: of the cross-entropy; gan: one-sided, of the discriminator's "
                       "real targets",
    "strategy": f"multi-exit training method: {', '.join(STRATEGIES)}, with options as in osgd:granularity=tensor",
    "num_exits": "number of exits (stages) of the anytime network",
}


def add_field(parser: argparse.ArgumentParser, name: str, kind: Any, default: Any, help_text: str) -> None:
    """The option of one config field, typed from its annotation."""
    if name == "model_options":  # repeatable: --model-option depth=3 --model-option act=gelu
        parser.add_argument("--model-option", dest=name, action="append", default=default, metavar="KEY=VALUE",
                            help=help_text)
        return
    flag = "--" + name.replace("_", "-")
    options = [a for a in typing.get_args(kind) if a is not type(None)] if isinstance(kind, types.UnionType) else [kind]
    if options[0] is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    else:
        parser.add_argument(flag, type=options[0], default=default, help=help_text)


def add_task_arguments(parser: argparse.ArgumentParser, only: Task | None = None) -> None:
    """``--task`` and one option per field of any task's config, each defaulting to the chosen task's default;
    an option the chosen task lacks is an error (see :func:`task_config`). With ``only``, that task's options
    alone and no ``--task`` (the ``gradgeo anytime`` aliases)."""
    tasks = [only] if only is not None else list(TASKS.values())
    if only is None:
        parser.add_argument("--task", default="classify",
                            help=f"the workload: {', '.join(TASKS)} (default: classify)")
    else:
        parser.set_defaults(task=only.name)
    fields: dict[str, list[tuple[str, Any]]] = {}
    hints: dict[str, Any] = {}
    for task in tasks:
        task_hints = typing.get_type_hints(task.config_class)
        for field in dataclasses.fields(task.config_class):
            fields.setdefault(field.name, []).append((task.name, field.default))
            hints.setdefault(field.name, task_hints[field.name])
    for name, defaults in fields.items():
        only_in = "" if len(defaults) == len(tasks) else f"{' and '.join(t for t, _ in defaults)} only; "
        if len({repr(d) for _, d in defaults}) == 1:
            where = f"{only_in}default: {defaults[0][1]}"
        else:
            where = "default: " + ", ".join(f"{task} {default}" for task, default in defaults)
        text = _HELP.get(name, "")
        # a help text that says its own default keeps it; the others get the task's default
        add_field(parser, name, hints[name], argparse.SUPPRESS, text if "(default:" in text else f"{text} ({where})")
    parser.set_defaults(config_fields=tuple(fields))


def task_config(args: argparse.Namespace) -> tuple[Task, TrainConfig]:
    """The task ``--task`` names and its validated config from the options given."""
    task = get_task(args.task)
    fields = {name: getattr(args, name) for name in args.config_fields if hasattr(args, name)}
    if isinstance(fields.get("model_options"), list):  # each --model-option KEY=VALUE
        fields["model_options"] = ",".join(fields["model_options"])
    return task, make_config(task, **fields)


def add_grid_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options of a comparison over seeds: --seeds, --seed-list, --jobs, --out, --quiet."""
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--seed-list", type=int, nargs="+", help="explicit seeds instead of --seeds")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default: 1)")
    parser.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no line per finished epoch")


def seeds(args: argparse.Namespace) -> Sequence[int]:
    """The seeds of ``--seeds`` or ``--seed-list``."""
    return args.seed_list if args.seed_list else list(range(args.seeds))


LOGS = ("jsonl", "tensorboard")
#: what each optional extra is for on the command line, for ``gradgeo --help``
EXTRA_USES = {
    "harness": "compare, demo and anytime compare (statistics, plots), progress bars, train --task gan",
    "images": "--dataset folder:DIR (Pillow decodes the images)",
    "tune": "tune, compare --storage",
    "tensorboard": "--log tensorboard",
}


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log``: metrics.jsonl always; ``tensorboard`` adds TensorBoard events to every run folder."""
    parser.add_argument("--log", choices=LOGS, default="jsonl",
                        help="jsonl (default): metrics.jsonl in each run folder; tensorboard: also TensorBoard events "
                             "in its tensorboard/ folder, with the metric strength and the gradient norms before "
                             "and after the transform (needs gradgeo[tensorboard])")


def extras_epilog() -> str:
    """``gradgeo --help``'s last lines: each optional extra, what needs it, and whether it is installed."""
    lines = ["optional extras (pip install 'gradgeo[EXTRA]'):"]
    for extra, uses in EXTRA_USES.items():
        gone = missing(extra)
        state = f"MISSING {', '.join(gone)}: pip install 'gradgeo[{extra}]'" if gone else "installed"
        lines.append(f"  {extra:<12} for {uses} [{state}]")
    return "\n".join(lines)
