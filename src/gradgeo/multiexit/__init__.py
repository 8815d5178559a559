"""The multi-exit layer: training strategies for anytime networks, OSGD among them.

* :mod:`gradgeo.multiexit.strategies`: the strategies selectable by name (``"sum"``, ``"sdn"``,
  ``"adaloss"``, ``"pcgrad"``, ``"osgd"``) behind one interface, :class:`MultiExitStrategy`.
* :mod:`gradgeo.multiexit.osgd`: ordered Gram-Schmidt and the OSGD backward, public as :mod:`gradgeo.osgd`.

This layer imports torch and nothing else of gradgeo's; it never imports the channel metrics, nor they it
(docs/design.md section 4).
"""

from gradgeo.multiexit import strategies as _strategies
from gradgeo.multiexit.strategies import *  # noqa: F403  (the names of its __all__)

__all__ = list(_strategies.__all__)
