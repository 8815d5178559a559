"""Anytime (multi-exit) networks: a branched ResNet and recursively nested networks (docs/design.md section 3).

An anytime network is a sequence of K stages; stage k ends in exit k. Running the stages one after another
gives a prediction after each, every layer is computed once, and the computation can stop after any exit:

    model = build_anytime_model("nested_depth", num_classes=10, in_channels=1)
    for k, logits in enumerate(model.exits(x), 1):   # stage after stage; stop whenever
        ...
    model(x)                                         # all K logits, first exit first

Every stage owns its layers and its exit head (``model.stages[k]``, an ``nn.Module``), and stage k reads
only what stages 1..k computed: exit k depends on the parameters of stages 1..k and nothing else.

* :class:`BranchedResNet`: a ResNet trunk of K stages (16, 32, 64, 128 channels, strides 1, 2, 2, 2) with
  an exit head after each stage.
* :class:`NestedDepthNet`: stage 1 is a small ResNet; each later stage interlaces one new residual block
  after every block of the network so far, each reading the stored activation it follows, which doubles
  the depth (and the compute) with every exit.
* :class:`NestedWidthNet`: stage 1 is a small plain CNN; each later stage adds channels to every layer that
  read the previous layer's old and new channels (old channels never read new ones), doubling the width.

Per-exit cost is measured, not guessed: :func:`exit_flops` counts the FLOPs of each stage with
``torch.utils.flop_counter.FlopCounterMode``; :func:`anytime_predict` stops at a FLOP or a time budget.

References:
    Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural Networks",
    ICML 2020 (the nested designs here are the project's own derivation from its abstract, docs/design.md 3).
    Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gradgeo.models.anytime.base import AnytimeNetwork, ExitHead
from gradgeo.models.anytime.branched import BranchedResNet
from gradgeo.models.anytime.inference import AnytimePrediction, anytime_predict, exit_flops
from gradgeo.models.anytime.nested import NestedDepthNet, NestedWidthNet
from gradgeo.models.imported import build_imported, is_import_path

__all__ = [
    "ANYTIME_MODELS",
    "AnytimeNetwork",
    "AnytimePrediction",
    "BranchedResNet",
    "ExitHead",
    "NestedDepthNet",
    "NestedWidthNet",
    "anytime_predict",
    "build_anytime_model",
    "exit_flops",
]


_REGISTRY: dict[str, Callable[..., AnytimeNetwork]] = {
    "branched_resnet10": partial(BranchedResNet, 1),
    "branched_resnet26": partial(BranchedResNet, 3),
    "nested_depth": NestedDepthNet,
    "nested_width": NestedWidthNet,
}

ANYTIME_MODELS: tuple[str, ...] = tuple(_REGISTRY)


def build_anytime_model(
    name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: object
) -> AnytimeNetwork:
    """Build a registered anytime network, freshly initialized (seed ``torch.manual_seed`` first).

    Args:
        name: one of :data:`ANYTIME_MODELS`: ``"branched_resnet10"``, ``"branched_resnet26"``,
            ``"nested_depth"``, ``"nested_width"``; or ``"package.module:callable"``, a factory of your own
            called with ``num_classes``, ``in_channels`` and ``**kwargs`` that returns an :class:`AnytimeNetwork`.
        num_classes: logits per exit.
        in_channels: input image channels.
        **kwargs: passed to the constructor; all accept ``width`` and ``num_exits`` (default 4).

    Returns:
        The :class:`AnytimeNetwork`, in training mode, on the CPU.

    Example:
        >>> model = build_anytime_model("branched_resnet10", num_classes=10, in_channels=3, num_exits=3)
        >>> model.num_exits
        3
    """
    if is_import_path(name):  # a factory of the user's: it must build an AnytimeNetwork (stages and exits)
        model = build_imported(name, num_classes, in_channels, **kwargs)
        if not isinstance(model, AnytimeNetwork):
            raise ValueError(f"model {name!r} returned a {type(model).__name__}; an anytime model must be a "
                             "gradgeo.models.AnytimeNetwork (its stages, each ending in an exit)")
        return model
    if name not in _REGISTRY:
        raise ValueError(f"unknown anytime model {name!r}; known anytime models: {', '.join(ANYTIME_MODELS)}, or "
                         "package.module:callable for one of your own")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
