"""Public home of orthogonalized SGD (docs/design.md section 2): ``gradgeo.osgd.gram_schmidt`` and
``gradgeo.osgd.backward``.

The implementation lives in :mod:`gradgeo.multiexit.osgd`; this module re-exports its public names.
"""

from gradgeo.multiexit import osgd as _implementation
from gradgeo.multiexit.osgd import *  # noqa: F403  (the names of its __all__)

__all__ = list(_implementation.__all__)
