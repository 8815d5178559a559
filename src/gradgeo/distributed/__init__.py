"""Public home of the channel transforms of FSDP2-sharded (DTensor) gradients.

The implementation lives in :mod:`gradgeo.channel.distributed`; this module re-exports its public names.
"""

from gradgeo.channel import distributed as _implementation
from gradgeo.channel.distributed import *  # noqa: F403  (the names of its __all__)

__all__ = list(_implementation.__all__)
