"""A run's per-epoch rows as TensorBoard scalars, beside ``metrics.jsonl`` (``gradgeo train --log tensorboard``).

Every number of a row is one scalar, tagged with the row's key (``train_loss``, ``test_acc``, ``lr``, ``lam``,
``grad_norm_before`` ...; a list, such as an anytime run's per-exit accuracies, as ``key/0``, ``key/1`` ...)
at the step of its epoch (1, 2, ...). The events go to ``OUT/tensorboard``: ``tensorboard --logdir OUT``.
Needs the optional extra ``gradgeo[tensorboard]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradgeo.training.extras import require

__all__ = ["TENSORBOARD", "TensorBoardLog"]

#: the event folder inside a run folder
TENSORBOARD = "tensorboard"


class TensorBoardLog:
    """Write per-epoch rows as TensorBoard scalars into ``folder``.

    The rows already in ``history`` (a resumed run's) are written again first, and the events an earlier,
    interrupted process wrote are purged from the view, so the scalars always match ``metrics.jsonl``.

    Args:
        folder: the event folder (created if needed).
        history: the rows of the epochs already trained.
    """

    def __init__(self, folder: Path, history: Iterable[dict[str, Any]] = ()) -> None:
        require("tensorboard", "tensorboard", "TensorBoard logging (--log tensorboard)")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step=1: TensorBoard hides what earlier event files logged at steps >= 1, i.e. everything
        self._writer = SummaryWriter(str(folder), purge_step=1)
        for row in history:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        """Log the numbers of one epoch's row at the step ``row["epoch"]`` and flush them to disk."""
        step = row["epoch"]
        for key, value in row.items():
            values = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            for index, v in values:
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._writer.add_scalar(key if index is None else f"{key}/{index}", v, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
