"""gradgeo: change the geometry of the gradient in CNN training, and measure whether that helps.

* Channel-directed gradients: :class:`ChannelDirected` wraps any torch optimizer and replaces each
  convolution weight's gradient by its gradient under a channel metric (:mod:`gradgeo.transforms`).
* Orthogonalized SGD for anytime (multi-exit) networks: :mod:`gradgeo.osgd`.
* Optimizers from spec strings, timm style: :func:`create_optimizer` (``"sgd+sobolev:lam=0.1"``).
* Gradient transforms of your own beside the built-in metrics: :func:`register_metric` (``"sgd+mine:alpha=0.5"``).
* Scale-out: the transforms of FSDP2-sharded (DTensor) gradients, :mod:`gradgeo.distributed`.

The package is built in layers (CONTRIBUTING.md, "Where things go"): ``channel`` and ``multiexit`` at the
bottom, then ``models`` and ``data``, ``training``, ``tasks``, ``experiments`` and ``cli``.
"""

from gradgeo import distributed, multiexit, osgd, transforms
from gradgeo.channel.factory import create_optimizer
from gradgeo.channel.optim import DEFAULT_LAM, METRICS, ChannelDirected, channel_directed, layer_kinds
from gradgeo.channel.registry import MetricOption, register_metric

__all__ = ["DEFAULT_LAM", "METRICS", "ChannelDirected", "MetricOption", "channel_directed", "create_optimizer",
           "distributed", "layer_kinds", "multiexit", "osgd", "register_metric", "transforms"]
__version__ = "0.1.0"
