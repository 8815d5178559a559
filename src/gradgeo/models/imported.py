"""Models named by import path: ``package.module:callable``, a factory of the user's own.

The factory is called with ``num_classes``, ``in_channels`` and the model options (``--model-option
key=value``, or ``model_options="key=value,..."`` in a config) and returns an ``nn.Module``. Every error names
the path and what is wrong: the module cannot be imported, the name is missing or not callable, the call
fails, or what it returns is not a module. (Whether the module's output fits the task is checked on a probe
batch when a run starts: :func:`gradgeo.training.engine.fit`.)
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from gradgeo.channel.factory import spec_value

__all__ = ["build_imported", "import_factory", "is_import_path", "parse_model_options"]


def is_import_path(name: str) -> bool:
    """Whether ``name`` is written ``module.path:callable`` (the built-in models have no ``:``).

    Example:
        >>> is_import_path("mypkg.nets:make_net"), is_import_path("resnet20")
        (True, False)
    """
    return isinstance(name, str) and ":" in name


def import_factory(path: str) -> Callable[..., Any]:
    """The callable ``path`` (``module.path:attribute``, the attribute may be dotted) names; a ValueError names
    the path and what is missing."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model {path!r}: write an import path as package.module:callable")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model {path!r}: cannot import module {module_name!r} ({error}); is it installed, or on "
                         "PYTHONPATH?") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model {path!r}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"model {path!r}: {attribute!r} is a {type(target).__name__}, not a callable that builds "
                         "a model")
    return target


def parse_model_options(text: str) -> dict[str, Any]:
    """``"depth=3,act=gelu,bias=true"`` -> ``{"depth": 3, "act": "gelu", "bias": True}`` (values as in optimizer
    spec strings: numbers, booleans, ``a/b`` tuples, else strings); ``""`` -> ``{}``.

    Example:
        >>> parse_model_options("depth=3,act=gelu")
        {'depth': 3, 'act': 'gelu'}
    """
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier() or not value.strip():
            raise ValueError(f"bad model option {item!r}: write key=value (a Python name, then a value)")
        if key in options:
            raise ValueError(f"model option {key!r} is given twice")
        value = spec_value(value.strip())
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"model option {key!r} is not a finite number")
        options[key] = value
    return options


def build_imported(path: str, num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    """Call the factory ``path`` names with ``num_classes``, ``in_channels`` and ``options``; a ValueError names
    the path when the call fails or returns something that is not an ``nn.Module``."""
    factory = import_factory(path)
    try:
        model = factory(num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as error:
        raise ValueError(f"model {path!r} could not be called with num_classes, in_channels and the model options "
                         f"{sorted(options)}: {error}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {path!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
