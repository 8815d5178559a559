"""gradgeo's optional dependencies: which extra brings which package, and a clear error when one is missing.

The core (transforms, :class:`~gradgeo.channel.optim.ChannelDirected`, OSGD, the training engine) needs torch alone;
the harness's tables, plots and progress bars, TensorBoard logging and the trainer recipes need the extras
below, installed with ``pip install 'gradgeo[EXTRA]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "check", "missing", "require"]

#: extra -> the top-level modules it brings (as in pyproject.toml's optional dependencies)
EXTRAS: dict[str, tuple[str, ...]] = {
    "harness": ("tqdm", "matplotlib", "numpy", "scipy"),
    "images": ("PIL",),
    "tune": ("optuna", "sqlalchemy", "psycopg"),
    "tensorboard": ("tensorboard",),
    "hf": ("accelerate", "transformers"),
    "lightning": ("lightning",),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """The modules of ``extra`` (or only ``modules`` of it) that cannot be imported, without importing them."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; gradgeo's extras are {', '.join(EXTRAS)}")
    return [m for m in modules or EXTRAS[extra] if importlib.util.find_spec(m) is None]


def check(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` saying that ``feature`` needs ``extra`` when any of its ``modules`` (default:
    all of them) is missing; imports nothing, so a long run can check up front what it needs at its end."""
    gone = missing(extra, modules)
    if gone:
        raise MissingExtraError(f"{feature} needs the optional package{'s' if len(gone) > 1 else ''} "
                                f"{', '.join(gone)}: pip install 'gradgeo[{extra}]'")


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` saying that ``feature`` needs ``extra``.

    Example:
        >>> require("json", "harness", "reading JSON").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"{feature} needs the optional package {error.name or module!r}: "
                                f"pip install 'gradgeo[{extra}]'") from error
