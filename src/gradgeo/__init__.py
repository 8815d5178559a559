"""gradgeo: better generalization from the same gradients.

* Channel-directed gradients: :class:`ChannelDirected` wraps any torch optimizer and replaces each
  convolution weight's gradient by its gradient under a channel metric (:mod:`gradgeo.transforms`).
* Orthogonalized SGD for anytime (multi-exit) networks: :mod:`gradgeo.osgd`.
"""

from gradgeo import multiexit, osgd, transforms
from gradgeo.optim import DEFAULT_LAM, METRICS, ChannelDirected, channel_directed, layer_kinds

__all__ = ["DEFAULT_LAM", "METRICS", "ChannelDirected", "channel_directed", "layer_kinds", "multiexit", "osgd",
           "transforms"]
__version__ = "0.1.0"
