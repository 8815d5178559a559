"""Public home of the gan task's API (``from gradgeo.gan import ...``, as the README shows it).

The implementation lives in :mod:`gradgeo.tasks.gan`; this module re-exports its public names.
"""

from gradgeo.tasks import gan as _implementation
from gradgeo.tasks.gan import *  # noqa: F403  (the names of its __all__)

__all__ = list(_implementation.__all__)
