"""Public home of the pure channel transforms (docs/design.md section 1): ``gradgeo.transforms.sobolev`` and the rest.

The implementation lives in :mod:`gradgeo.channel.transforms`; this module re-exports its public names, so
code that imports them from here keeps working however the implementation is organised.
"""

from gradgeo.channel import transforms as _implementation
from gradgeo.channel.transforms import *  # noqa: F403  (the names of its __all__, whatever they become)

__all__ = list(_implementation.__all__)
