"""Progress bars (tqdm, extra ``harness``) over the training steps and the evaluation batches of a run.

A bar clears when its loop ends (``leave=False``): what stays on the screen is the per-epoch table or the
per-epoch lines of a comparison. By default bars appear only when stderr is a terminal, so a log file gets no
bar redraws.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from gradgeo.training.extras import require

__all__ = ["progress_bar", "wants_bars"]

_T = TypeVar("_T")


def wants_bars(progress: bool | None) -> bool:
    """``progress``, where None means: only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def progress_bar(iterable: Iterable[_T], total: int, description: str, enabled: bool) -> Iterable[_T]:
    """``iterable`` under a tqdm bar of ``total`` steps labelled ``description`` that clears when done, or
    ``iterable`` itself when not ``enabled``."""
    if not enabled:
        return iterable
    tqdm = require("tqdm.auto", "harness", "progress bars (off with --quiet, or progress=False)").tqdm
    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True)
