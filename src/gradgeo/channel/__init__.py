"""The channel-metric layer: channel-directed gradients from the pure transforms up to the optimizer.

* :mod:`gradgeo.channel.transforms`: the pure transforms (tensor in, tensor out), public as
  :mod:`gradgeo.transforms`.
* :mod:`gradgeo.channel.optim`: :class:`ChannelDirected`, the wrapper around any torch optimizer.
* :mod:`gradgeo.channel.distributed`: the transforms of FSDP2-sharded gradients, public as
  :mod:`gradgeo.distributed`.
* :mod:`gradgeo.channel.factory`: optimizers from spec strings (``"sgd+sobolev:lam=0.1"``).
* :mod:`gradgeo.channel.registry`: the metrics by name, their options, and :func:`register_metric` for more.

This layer imports torch and nothing else of gradgeo's (docs/design.md section 4).
"""

from gradgeo.channel.factory import create_optimizer, parse_spec
from gradgeo.channel.optim import DEFAULT_LAM, METRICS, ChannelDirected, channel_directed, layer_kinds
from gradgeo.channel.registry import MetricInfo, MetricOption, metric_info, metric_names, register_metric

__all__ = ["DEFAULT_LAM", "METRICS", "ChannelDirected", "MetricInfo", "MetricOption", "channel_directed",
           "create_optimizer", "layer_kinds", "metric_info", "metric_names", "parse_spec", "register_metric"]
