"""``gradgeo list``: what a user can choose from, read from the registries themselves.

Sections: the channel metrics of an optimizer spec, built in or registered (:mod:`gradgeo.channel.registry`), the
base optimizers (:mod:`gradgeo.channel.factory`), the models (:mod:`gradgeo.models`), the datasets
(:mod:`gradgeo.data.sources`), the tasks (:data:`gradgeo.tasks.TASKS`) and the multi-exit strategies
(:data:`gradgeo.multiexit.STRATEGIES`), each with its options and their defaults.
``--json`` prints the same as one object with a key per section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from gradgeo.channel.factory import BASES, SPEC_GRAMMAR, SpecOption, base_options, metric_options
from gradgeo.channel.registry import metric_info, metric_names
from gradgeo.data.sources import DATASETS, ENV_VAR, dataset_source
from gradgeo.models import (
    ANYTIME_MODELS,
    GAN_MODELS,
    MODELS,
    SEGMENTATION_MODELS,
    build_anytime_model,
    build_gan,
    build_model,
    build_segmentation_model,
)
from gradgeo.multiexit import STRATEGIES, strategy_options
from gradgeo.tasks import TASKS

__all__ = ["SECTIONS", "add_list_parser", "listing"]

Entry = dict[str, Any]

#: each model registry: its family, its names and the function that builds them
_MODEL_REGISTRIES: tuple[tuple[str, tuple[str, ...], Callable[..., Any]], ...] = (
    ("classifier", MODELS, build_model),
    ("segmentation", SEGMENTATION_MODELS, build_segmentation_model),
    ("gan", GAN_MODELS, build_gan),
    ("anytime", ANYTIME_MODELS, build_anytime_model),
)


def _option(option: SpecOption) -> Entry:
    return {**dataclasses.asdict(option), "written": option.written}


def _metrics() -> list[Entry]:
    return [{"name": m, "summary": metric_info(m).summary, "options": [_option(o) for o in metric_options(m)]}
            for m in metric_names()]


def _optimizers() -> list[Entry]:
    return [{"name": name, "class": f"{cls.__module__}.{cls.__qualname__}",
             "options": [_option(o) for o in base_options(name)]} for name, cls in BASES.items()]


def _models() -> list[Entry]:
    return [{"name": name, "family": family, "builder": build.__name__,
             "tasks": [task.name for task in TASKS.values() if name in task.models]}
            for family, names, build in _MODEL_REGISTRIES for name in names]


def _datasets() -> list[Entry]:
    entries = []
    for name in DATASETS:
        source = dataset_source(name)
        entries.append({"name": name, "display_name": source.display_name, "files": list(source.files),
                        "searched": [str(d) for d in source.searched],
                        "found": None if source.found is None else str(source.found), "how_to_get": source.how_to_get})
    return entries


def _tasks() -> list[Entry]:
    entries = []
    for task in TASKS.values():
        config = task.config_class()
        entries.append({"name": task.name, "compares": task.compared, "models": list(task.models),
                        "default_model": config.model, "default_dataset": config.dataset,
                        "metrics": [metric.label for metric in task.metrics],
                        "optimizer_defaults": config.optimizer_defaults()})
    return entries


def _hint_type(hint: Any) -> tuple[str, tuple[Any, ...]]:
    """A strategy option's type as the listing names it, and its choices."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _hint_type(args[0]) if len(args) == 1 else ("any", ())
    if typing.get_origin(hint) is typing.Literal:
        return "choice", tuple(args)
    if typing.get_origin(hint) is not None and args:  # Sequence[float]: numbers written a/b/c
        return "numbers", ()
    return {bool: "bool", int: "integer", float: "number", str: "text"}.get(hint, "any"), ()


def _strategies() -> list[Entry]:
    entries = []
    for name, cls in STRATEGIES.items():
        options = []
        for key, (hint, default) in strategy_options(name).items():
            kind, choices = _hint_type(hint)
            written = None if default is None else f"{key}={default}"
            options.append({"name": key, "type": kind, "default": default, "rule": "", "choices": list(choices),
                            "written": written})
        entries.append({"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "options": options})
    return entries


#: the sections, in the order they are shown, and what each lists
SECTIONS: dict[str, Callable[[], list[Entry]]] = {
    "metrics": _metrics,
    "optimizers": _optimizers,
    "models": _models,
    "datasets": _datasets,
    "tasks": _tasks,
    "strategies": _strategies,
}
_HEADERS = {
    "metrics": f"channel metrics: the METRIC of an optimizer spec {SPEC_GRAMMAR} (an option left out takes the "
               "default shown as key=value; gradgeo.register_metric and the entry points of group gradgeo.metrics "
               "add more)",
    "optimizers": "base optimizers: the BASE of an optimizer spec (lr has no default here: write it in the spec or "
                  "give --lr; gradgeo train and compare pass each task's optimizer defaults, see tasks)",
    "models": "models: --model NAME, or the Python builder named",
    "datasets": f"datasets: --dataset NAME; searched in order (--data-dir DIR instead; ${ENV_VAR} adds a root); "
                "your own: --dataset npz:FILE, folder:DIR (DIR/train/CLASS/IMAGE and DIR/test/CLASS/IMAGE) or "
                "package.module:callable",
    "tasks": "tasks: gradgeo train/compare --task NAME",
    "strategies": "multi-exit strategies: --strategy NAME[:key=value,...] of the anytime task, and the labels of "
                  "gradgeo anytime compare",
}


def listing(sections: Sequence[str] = ()) -> dict[str, list[Entry]]:
    """The entries of the named sections (all when none is named), in the order of :data:`SECTIONS`.

    Raises:
        ValueError: an unknown section, naming the valid ones.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    return {name: build() for name, build in SECTIONS.items() if not sections or name in sections}


def _option_text(option: Entry) -> str:
    kind = {"bool": "true|false", "pair": "B1/B2", "choice": "|".join(map(str, option["choices"])),
            "choices": "any of " + "/".join(option["choices"]), "numbers": "numbers a/b/..."}.get(option["type"],
                                                                                            option["type"])
    rule = f" {option['rule']}" if option["rule"] else ""
    return f"{option['written'] or option['name']} ({kind}{rule})"


def _details(section: str, entry: Entry) -> tuple[str, list[list[str]]]:
    """An entry's one-line summary and its further lines, each a list of items that stay whole when wrapped."""
    if section in ("metrics", "optimizers", "strategies"):
        return entry.get("summary") or entry["class"], [[_option_text(o) for o in entry["options"]] or ["no options"]]
    if section == "models":
        return f"{entry['family']}, {entry['builder']}(), --task {' or '.join(entry['tasks'])}", []
    if section == "datasets":
        found = f"found in {entry['found']}" if entry["found"] else "not found"
        return f"{entry['display_name']}: {found}", [_labelled("files:", entry["files"]),
                                                      _labelled("looked for in:", entry["searched"]),
                                                      [f"to get it: {entry['how_to_get']}"]]
    defaults = [SpecOption(k, "", v).written or k for k, v in entry["optimizer_defaults"].items() if v is not None]
    return f"compares {entry['compares']} specs; reports {', '.join(entry['metrics'])}", [
        [f"models: {', '.join(entry['models'])} (default {entry['default_model']}); default dataset "
         f"{entry['default_dataset']}"], _labelled("optimizer defaults:", defaults)]


def _labelled(label: str, items: list[str]) -> list[str]:
    """``items`` with ``label`` in front of the first."""
    return [f"{label} {items[0]}", *items[1:]] if items else [label]


def _wrap(items: list[str], width: int, indent: str) -> list[str]:
    """Items joined by two spaces into lines of at most ``width`` (an item longer than a line is wrapped on its
    own), the lines after the first indented two more."""
    lines: list[str] = []
    line = ""
    for item in items:
        if line and len(indent) + len(line) + 2 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    lines.append(line)
    wrapped = []
    for i, text in enumerate(lines):
        first = indent if i == 0 else indent + "  "
        wrapped += textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent + "  ",
                                 break_on_hyphens=False, break_long_words=False)
    return wrapped


def render(listed: dict[str, list[Entry]], width: int = 110) -> str:
    """The listing as text: a header per section, an entry per name with its details indented below."""
    lines: list[str] = []
    for section, entries in listed.items():
        lines += textwrap.wrap(_HEADERS[section], width, subsequent_indent="  ")
        name_width = max(len(e["name"]) for e in entries) + 2
        indent = " " * (2 + name_width)
        for entry in entries:
            summary, details = _details(section, entry)
            lines += textwrap.wrap(f"{entry['name']:<{name_width}}{summary}", width, initial_indent="  ",
                                   subsequent_indent=indent)
            for items in details:
                lines += _wrap(items, width, indent)
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _cmd_list(args: argparse.Namespace) -> None:
    listed = listing(args.sections)
    print(json.dumps(listed, indent=2) if args.json else render(listed))


def add_list_parser(sub: Any) -> None:
    """The ``list`` command."""
    p = sub.add_parser("list", help="the metrics, optimizers, models, datasets, tasks and strategies to choose from",
                       description="List what gradgeo's options accept, with each option's type and default: "
                                   f"{', '.join(SECTIONS)} (all of them unless some are named).")
    p.add_argument("sections", nargs="*", metavar="SECTION", help=f"some of: {', '.join(SECTIONS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object with a key per section")
    p.set_defaults(run=_cmd_list)
