"""Public home of the segment task's API (``from gradgeo.segment import ...``, as the README shows it).

The implementation lives in :mod:`gradgeo.tasks.segment`; this module re-exports its public names.
"""

from gradgeo.tasks import segment as _implementation
from gradgeo.tasks.segment import *  # noqa: F403  (the names of its __all__)

__all__ = list(_implementation.__all__)
