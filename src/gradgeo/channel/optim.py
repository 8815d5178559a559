"""Channel-directed gradients in front of any torch optimizer.

:class:`ChannelDirected` wraps an optimizer instance: at every ``step`` it replaces the gradient of each
selected parameter by its Riesz representative under a channel metric (:mod:`gradgeo.transforms`), then
lets the wrapped optimizer do its own step (momentum, weight decay, Adam moments) on that gradient. The
metric changes the geometry, not the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.optim import Optimizer

from gradgeo.channel._batch import Batch, side_by_side
from gradgeo.channel.distributed import ShardedJob, is_dtensor, transform_dtensors_
from gradgeo.channel.registry import (
    APPLY_TO,
    DEFAULT_LAM,
    LAM_RANGES,
    METRICS,
    OPTION_DEFAULTS,
    MetricInfo,
    check_options_used,
    metric_info,
    validate_options,
)
from gradgeo.channel.transforms import (
    Direction,
    LayerKind,
    channel_operator,
    h1_,
    laplacian_smooth_,
    reweighted_h0_,
    smoothing_view,
    sobolev_,
)

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["APPLY_TO", "DEFAULT_LAM", "LAM_RANGES", "METRICS", "OPTION_DEFAULTS", "check_options_used", "NONFINITE",
           "ChannelDirected", "channel_directed", "layer_kinds"]

NONFINITE: tuple[str, ...] = ("raise", "skip")


# With foreach, gradients up to this size are transformed in batches, one call per batch: below it the
# per-call overhead dominates; above it the copies into the batch cost more than they save. Gradients whose
# channel axis comes first (direction "out") batch by channel count, their columns side by side; others
# batch by shape, stacked (gradgeo.channel._batch). On CPU only where that pays: see _alone_on_cpu.
_BATCH_NUMEL = 1 << 16

def _alone_on_cpu(group: Mapping[str, Any], view_shape: tuple[int, ...], dim: int, grad: torch.Tensor) -> bool:
    """Whether a small CPU gradient is transformed on its own rather than in a batch (measured on ResNet-56
    shapes, benchmarks/transforms.py): a batch pays as one product with ``[M; 1/C]`` (channel axis first, up
    to 64 channels for ``sobolev`` and ``h1``, 32 for ``h0``: ``channel_operator``) and for ``laplacian``;
    ``h0``'s other batches and the block form of longer channel axes cost more in copies into and out of the
    batch than they save in calls."""
    if group["metric"] == "laplacian":
        return False
    if side_by_side(view_shape, dim):
        dtype = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        return channel_operator(group["metric"], view_shape[dim], group["lam"], group["boundary"], dtype,
                                grad.device) is None
    return group["metric"] == "h0"


def _kernel(group: Mapping[str, Any]) -> tuple[Callable[..., torch.Tensor], tuple[Any, ...]]:
    """The in-place transform of a group of a built-in metric and its arguments after ``(x, ...)``, before ``dim``."""
    metric = group["metric"]
    if metric == "h0":
        return reweighted_h0_, (group["lam"],)
    if metric == "sobolev":
        return sobolev_, (group["lam"],)
    if metric == "h1":
        return h1_, (group["lam"],)
    return laplacian_smooth_, (group["sigma"],)


def _batch_transform(group: Mapping[str, Any], info: MetricInfo) -> Callable[[Batch, list[torch.Tensor]], torch.Tensor]:
    """How a group's batches are transformed in place, each returning its probe: by the built-in metric's kernel,
    or by the registered transform, which sees one parameter's own gradient (its batches have one member)."""
    if info.transform is None:
        kernel, args = _kernel(group)
        return lambda batch, grads: batch.transform_(grads, group["metric"], kernel, args, group["boundary"])
    options = info.arguments(group)
    return lambda batch, grads: info.transform_(grads[0], batch.view_shape, batch.dim, options)


def layer_kinds(model: nn.Module) -> dict[torch.Tensor, LayerKind]:
    """Map every parameter of ``model`` to its layer kind for :func:`gradgeo.transforms.smoothing_view`.

    Conv weights are ``"conv"``, ConvTranspose weights ``"conv_transpose"``, Linear weights ``"linear"``
    and every 1-D parameter (biases, norm weights) ``"vector"``. Parameters of other modules are left out
    and fall back to the shape rule of :class:`ChannelDirected`.
    """
    kinds: dict[torch.Tensor, LayerKind] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.modules.conv._ConvNd) and isinstance(weight, torch.Tensor):
            kinds[weight] = "conv_transpose" if module.transposed else "conv"
        elif isinstance(module, nn.Linear):
            kinds[module.weight] = "linear"
        for p in module.parameters(recurse=False):
            if p.dim() == 1:
                kinds.setdefault(p, "vector")
    return kinds


def _kind_from_shape(p: torch.Tensor) -> LayerKind | None:
    """Without a model, a tensor with 3+ dims is a conv weight (output axis 0), 2 dims Linear, 1 a vector."""
    kinds: dict[int, LayerKind | None] = {0: None, 1: "vector", 2: "linear"}
    return kinds.get(p.dim(), "conv")


class ChannelDirected(Optimizer):
    """Wrap ``base`` so that it steps on channel-directed gradients.

    For each selected parameter the gradient ``G`` is replaced by its gradient under the chosen metric
    along the chosen axis (docs/design.md section 1), then ``base.step()`` runs:

    * ``"h0"``: ``mean(G) + (G - mean(G)) / lam`` (:func:`~gradgeo.transforms.reweighted_h0`).
    * ``"sobolev"``: mean kept, ``lam C^2 D^T D g = G - mean(G)`` (:func:`~gradgeo.transforms.sobolev`).
    * ``"h1"``: ``(I + lam C^2 D^T D) g = G`` (:func:`~gradgeo.transforms.h1`).
    * ``"laplacian"``: LS-SGD baseline on the flattened tensor (:func:`~gradgeo.transforms.laplacian_smooth`).
    * ``"none"``: the identity; the wrapper is then bit-for-bit the base optimizer (for A/B runs).
    * a name given to :func:`~gradgeo.channel.registry.register_metric`: its ``transform(grad, dim, **options)``,
      called on each selected gradient alone, viewed along the axis ``direction`` chooses.

    The wrapper shares ``base.param_groups`` and ``base.state``: LR schedulers, ``state_dict`` and hooks
    work unchanged, and the options below live in every param group, so groups may differ (for example
    another ``lam`` per group, or ``metric="none"`` for a group). ``lam`` interacts with the learning rate:
    ``sobolev`` scales the k-th channel mode by about ``1 / (lam pi^2 k^2)``, ``h0`` everything that varies
    across channels by ``1 / lam``; tune both together.

    Distributed training: under DDP ``step`` runs after the backward pass has all-reduced the gradients, so
    every rank transforms the same averaged gradient, as one process would. Under FSDP2 (a DTensor
    gradient) the transform is computed shard by shard with small collectives (:mod:`gradgeo.distributed`),
    equal to the transform of the whole gradient; every rank must then call ``step`` (they all do in FSDP2).
    A registered metric refuses DTensor gradients (``NotImplementedError``): its transform would see a shard.

    Args:
        base: the optimizer to wrap (any ``torch.optim.Optimizer`` except LBFGS, which re-evaluates closures).
        metric: one of ``METRICS`` or a registered metric (:func:`~gradgeo.channel.registry.metric_names`).
        lam: metric strength (``h0``, ``sobolev``, ``h1``); ``None`` takes ``DEFAULT_LAM[metric]``.
        direction: ``"out"`` (default), ``"in"``, ``"spatial"`` or ``"flat"`` (docs/design.md 1d).
        boundary: ``"neumann"`` (default, open chain) or ``"periodic"`` (ring), for ``sobolev`` and ``h1``.
        sigma: strength of the ``laplacian`` baseline, ``>= 0``.
        apply_to: which parameters to transform: any of ``"conv"`` (Conv and ConvTranspose weights, the
            default), ``"linear"`` (Linear weights) and ``"vector"`` (biases, norm weights).
        nonfinite: what to do when a gradient the base optimizer would use holds NaN or Inf (transformed or
            not, every group, ``metric="none"`` included): ``"raise"`` (default; the error names the
            parameter) or ``"skip"`` (skip this step, like ``GradScaler``; ``skipped_steps`` counts them).
            A transformed float32/float64 gradient is checked on the probe its transform computes anyway
            (non-finite exactly when the input was; a finite input overflows only if ``|G| / lam`` passes
            3e38); untransformed gradients, and half-precision ones after the float32 result is written
            back (float16 overflows at small ``lam``), as their own probes. All probes are checked by one
            multi-tensor L2 norm and one host sync per step, entry by entry only when a norm is not finite.
        foreach: transform small gradients in batches, a few calls per batch: gradients with the channel
            axis first and the same channel count side by side, others of equal shape stacked; the batches
            are planned once and kept while the gradients' shapes and layouts stay (default: on).
        track_grad_norms: record, at every step, the L2 norm of the selected gradients (all of them together)
            before and after the transform, for :meth:`pop_grad_norms`; off by default, when it reads
            nothing extra. Settable later as the attribute of the same name.
        kinds: parameter -> layer kind (``"conv"``, ``"conv_transpose"``, ``"linear"``, ``"vector"``),
            e.g. from :func:`layer_kinds`. Without it a tensor with 3+ dims counts as a conv weight.
        names: parameter -> name, for error messages (else the base's ``param_names`` when present).
        **metric_options: the options a registered metric declared (``alpha=0.5``); like the ones above they
            live in every param group, and ``None`` takes the default.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> opt = ChannelDirected(torch.optim.SGD(model.parameters(), lr=0.1), metric="sobolev", lam=0.1)
        >>> model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        >>> opt.step()

    References:
        Sundaramoorthi et al., "Sobolev Active Contours", IJCV 2007 (the Sobolev metric);
        Osher et al., "Laplacian Smoothing Gradient Descent", 2018 (the ``laplacian`` baseline).
    """

    def __init__(
        self,
        base: Optimizer,
        metric: str = "sobolev",
        lam: float | None = None,
        direction: str | None = None,
        boundary: str | None = None,
        sigma: float | None = None,
        apply_to: Iterable[str] | None = None,
        *,
        nonfinite: str = "raise",
        foreach: bool | None = None,
        track_grad_norms: bool = False,
        kinds: Mapping[torch.Tensor, LayerKind] | None = None,
        names: Mapping[torch.Tensor, str] | None = None,
        **metric_options: Any,
    ) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"ChannelDirected wraps a torch.optim.Optimizer instance, got {type(base).__name__}; "
                            "build the optimizer first, e.g. ChannelDirected(torch.optim.SGD(params, lr=0.1))")
        if isinstance(base, torch.optim.LBFGS):
            raise TypeError("LBFGS re-evaluates the closure inside its step, so its gradients cannot be "
                            "transformed in front of it; use a first-order optimizer")
        if nonfinite not in NONFINITE:
            raise ValueError(f"unknown nonfinite policy {nonfinite!r}; expected one of {NONFINITE}")
        info = metric_info(metric)
        given = {key: value for key, value in {"lam": lam, "direction": direction, "boundary": boundary,
                                                "sigma": sigma, "apply_to": apply_to, **metric_options}.items()
                 if value is not None}
        check_options_used(metric, given)
        if "apply_to" in given and not isinstance(given["apply_to"], str):
            given["apply_to"] = tuple(given["apply_to"])
        options = {"metric": metric, **info.defaults(), **given}
        validate_options(options)
        clash = sorted(set(options) & set(base.defaults))
        if clash:
            raise ValueError(f"the wrapped optimizer already uses the option names {clash}; ChannelDirected "
                             "cannot share its param groups")
        self.base = base
        self.nonfinite = nonfinite
        self.foreach = True if foreach is None else bool(foreach)
        self.skipped_steps = 0
        self.track_grad_norms = track_grad_norms
        self._norm_sums: torch.Tensor | None = None  # (before, after) summed over the steps since the last pop
        self._norm_steps = 0
        self._kinds = dict(kinds or {})
        self._names = dict(names or {})
        self._views: dict[tuple[torch.Tensor, str], tuple[tuple[int, ...], int] | None] = {}
        self._plans: dict[int, tuple[Any, tuple[list[Batch], list[int], list[int]]]] = {}  # _group_plan
        self._linked = False
        super().__init__(base.param_groups, options)  # setdefault our options into base's group dicts
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = {**base.defaults, **options}
        self._options = options
        self._linked = True

    # ------------------------------------------------------------------------- plumbing to the base

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not self._linked:  # called by Optimizer.__init__ on base's own groups
            super().add_param_group(param_group)
            return
        check_options_used(param_group.get("metric", self._options["metric"]),
                           [key for key in param_group if key in self._options and key != "metric"])
        self._complete(param_group)  # validate first: a rejected group must not stay registered
        validate_options(param_group)
        self.base.add_param_group(param_group)

    def _complete(self, group: dict[str, Any]) -> None:
        """Give ``group`` the options it lacks: this wrapper's, then the defaults of the group's own metric."""
        for key, value in self._options.items():
            group.setdefault(key, value)
        for key, value in metric_info(group["metric"]).defaults().items():
            group.setdefault(key, value)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this wrapper or of the bare base optimizer (which lacks the metric options: the
        groups keep this wrapper's). Checked before anything changes; a group saved with another metric than
        the one it has here is refused."""
        saved_groups = state_dict.get("param_groups", [])
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if "metric" in saved and saved["metric"] != group["metric"]:
                raise ValueError(f"param group {index} of the state dict uses metric {saved['metric']!r}, this "
                                 f"optimizer's uses {group['metric']!r}; build the wrapper with "
                                 f"metric={saved['metric']!r} to load it")
            validate_options({**group, **saved})
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        for group in self.param_groups:  # a state dict of the bare optimizer lacks our options
            self._complete(group)

    def __repr__(self) -> str:
        metrics = list(dict.fromkeys(group["metric"] for group in self.param_groups))  # what step() will use
        shown = f"metric={metrics[0]!r}" if len(metrics) == 1 else f"metrics={metrics!r}"
        return f"ChannelDirected({self.base!r}, {shown})"

    # ---------------------------------------------------------------------------------------- step

    def _name(self, p: torch.Tensor, group: Mapping[str, Any], index: int) -> str:
        if p in self._names:
            return self._names[p]
        if "param_names" in group:
            return group["param_names"][index]
        g = next(i for i, gr in enumerate(self.param_groups) if gr is group)
        return f"param {index} of group {g} (shape {tuple(p.shape)})"

    def _plan(self, p: torch.Tensor, group: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
        """``(view_shape, dim)`` to transform ``p.grad`` along, or None to leave it."""
        if p.grad is None or p.numel() == 0:  # a zero-size tensor has nothing to smooth
            return None
        kind = self._kinds.get(p) or _kind_from_shape(p)
        if kind is None or ("conv" if kind == "conv_transpose" else kind) not in group["apply_to"]:
            return None
        grad = p.grad
        if grad.is_sparse or grad.layout != torch.strided:
            raise ValueError(f"ChannelDirected needs dense gradients, got a {grad.layout} gradient; leave this "
                             "parameter out of the wrapped optimizer or use a dense embedding")
        if grad.is_complex():
            raise ValueError("ChannelDirected needs real gradients, got a complex one; the channel metrics are "
                             "defined for real tensors")
        direction: Direction = "flat" if group["metric"] == "laplacian" else group["direction"]
        key = (p, direction)  # the view depends only on the parameter and the direction: compute it once
        if key not in self._views:
            view = smoothing_view(p.shape, direction, kind)
            self._views[key] = None if view is None or view[0][view[1]] == 1 else view
        return self._views[key]

    def _group_plan(self, group: Mapping[str, Any], info: MetricInfo) -> tuple[list[Batch], list[int], list[int]]:
        """The batches of a group's transformed gradients, the indices of its gradients no probe covers (left
        untransformed, or written back in a half type, whose float32 result can overflow) and of its sharded
        (DTensor) ones. Kept while the options and every gradient's presence, dtype, device and strides stay. A
        registered metric's transform sees one gradient at a time: each is a batch of its own."""
        params = group["params"]
        signature = (tuple(group[k] for k in self._options), self.foreach, tuple(
            (id(p), None) if (g := p.grad) is None else
            (id(p), g.dtype, g.device, g.layout, g.stride() if g.layout == torch.strided else None) for p in params))
        cached = self._plans.get(id(group))
        if cached is not None and cached[0] == signature:
            return cached[1]
        batches: dict[tuple[Any, ...], tuple[list[tuple[torch.Tensor, int]], tuple[int, ...], int]] = {}
        unprobed, sharded = [], []
        for index, p in enumerate(params):
            plan = self._plan(p, group)
            if p.grad is not None and (plan is None or p.grad.dtype in (torch.float16, torch.bfloat16)):
                unprobed.append(index)
            if plan is not None and is_dtensor(p.grad):  # FSDP2 / DTensor: shard-aware, gradgeo.distributed
                if info.transform is not None:
                    raise NotImplementedError(
                        f"metric {info.name!r} is a registered transform of the whole gradient, but the gradient of "
                        f"{self._name(p, group, index)} is a DTensor (FSDP2) holding one rank's shard: the transform "
                        "of a shard is not the transform of the gradient. Use a built-in metric (they have sharded "
                        "forms, gradgeo.distributed), keep such parameters out with apply_to, or train with DDP")
                sharded.append(index)
            elif plan is not None:
                view_shape, dim = plan
                alone = (info.transform is not None or not self.foreach or p.numel() > _BATCH_NUMEL
                         or (p.grad.device.type == "cpu" and _alone_on_cpu(group, view_shape, dim, p.grad)))
                # channel axis first: any shape with the same channel count joins the batch
                shape = view_shape[dim] if side_by_side(view_shape, dim) else view_shape
                key = (shape, dim, p.grad.dtype, p.grad.device, index if alone else None)
                batches.setdefault(key, ([], view_shape, dim))[0].append((p, index))
        plan_ = ([Batch(members, view_shape, dim, side_by_side(view_shape, dim))
                  for members, view_shape, dim in batches.values()], unprobed, sharded)
        self._plans[id(group)] = (signature, plan_)
        return plan_

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Transform the selected gradients in place, then run ``base.step()``; returns the closure's loss. An expanded
        gradient (stride 0: ``zeros(1).expand_as(p)``) is replaced by a contiguous copy; a zero-size one is left."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # (probe, its members (parameter, group, index), the batch that splits it per member, or None for one
        # probe per member): one probe per batch, checked for all at once after the transforms
        checks: list[tuple[torch.Tensor, list[tuple[torch.Tensor, Mapping[str, Any], int]], Batch | None]] = []
        sharded: list[tuple[ShardedJob, tuple[torch.Tensor, Mapping[str, Any], int]]] = []
        # gradients no probe covers (left untransformed, or written back in a half type, whose float32 result can
        # overflow): checked after the transforms, with the probes
        unprobed: list[tuple[torch.Tensor, Mapping[str, Any], int]] = []
        tracked: tuple[list[torch.Tensor], list[torch.Tensor]] | None = ([], []) if self.track_grad_norms else None
        for group in self.param_groups:
            params = group["params"]
            if group["metric"] == "none":
                unprobed += [(p, group, i) for i, p in enumerate(params) if p.grad is not None]
                continue
            validate_options(group)
            for p in params:  # an expanded gradient (stride 0) cannot be written in place: transform a copy
                if (g := p.grad) is not None and g.layout == torch.strided and any(
                        stride == 0 and size > 1 for stride, size in zip(g.stride(), g.shape)):
                    p.grad = g.contiguous()
            info = metric_info(group["metric"])
            batches, unprobed_indices, sharded_indices = self._group_plan(group, info)
            unprobed += [(params[i], group, i) for i in unprobed_indices]
            for i in sharded_indices:
                p = params[i]
                view_shape, dim = cast(tuple[tuple[int, ...], int], self._plan(p, group))  # set: a sharded plan
                strength = group["sigma"] if group["metric"] == "laplacian" else group["lam"]
                job = ShardedJob(cast(torch.Tensor, p.grad), view_shape, dim, group["metric"], strength,
                                 group["boundary"])
                sharded.append((job, (p, group, i)))
            transform = _batch_transform(group, info)
            for batch in batches:
                grads = [cast(torch.Tensor, p.grad) for p in batch.members]  # set: _plan() gave a plan
                if tracked is not None:
                    tracked[0].extend(_norms(grads))
                probe = transform(batch, grads)
                if tracked is not None:
                    tracked[1].extend(_norms(grads))
                checks.append((probe, [(p, group, i) for p, i in zip(batch.members, batch.indices)], batch))
        if sharded and tracked is not None:
            raise ValueError("track_grad_norms does not cover sharded (DTensor, FSDP2) gradients; turn it off")
        if sharded:
            probes = transform_dtensors_([job for job, _ in sharded])
            checks.extend((probe, [member], None) for probe, (_, member) in zip(probes, sharded))
        for member in unprobed:  # the gradient itself is its probe
            grad = cast(torch.Tensor, member[0].grad)  # set: unprobed holds set gradients
            grad = grad._values() if grad.is_sparse else grad
            if is_dtensor(grad):  # as clip_grad_norm_: a DTensor's norm is reduced over its shards, so all agree
                grad = cast("DTensor", torch.linalg.vector_norm(grad, math.inf)).full_tensor()
            checks.append((grad, [member], None))
        if checks and not self._all_finite(checks):
            self.skipped_steps += 1
            return loss
        if tracked is not None and tracked[0]:
            step_norms = torch.stack([torch.stack(n).square().sum().sqrt() for n in tracked])
            self._norm_sums = step_norms if self._norm_sums is None else self._norm_sums + step_norms
            self._norm_steps += 1
        self.base.step()
        return loss

    def pop_grad_norms(self) -> dict[str, float] | None:
        """The mean over the steps since the last call of the L2 norm of the selected gradients before and
        after the transform, ``{"grad_norm_before": ..., "grad_norm_after": ...}``, and start a new count.

        Needs ``track_grad_norms``; ``None`` when no step since the last call transformed a gradient (skipped
        steps are not counted). One host synchronization per call, none per step.

        Example:
            >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
            >>> opt = ChannelDirected(torch.optim.SGD(model.parameters(), lr=0.1), "h0", track_grad_norms=True)
            >>> model(torch.randn(2, 3, 8, 8)).square().mean().backward()
            >>> opt.step()
            >>> sorted(opt.pop_grad_norms())
            ['grad_norm_after', 'grad_norm_before']
        """
        if self._norm_sums is None:
            return None
        before, after = (self._norm_sums / self._norm_steps).tolist()
        self._norm_sums, self._norm_steps = None, 0
        return {"grad_norm_before": before, "grad_norm_after": after}

    def _all_finite(self, checks: list[tuple[torch.Tensor, list[tuple[torch.Tensor, Any, int]], Batch | None]]
                    ) -> bool:
        """Whether every probe is finite: one L2 norm per probe (a multi-tensor call), one host sync. A norm
        also overflows for finite entries (above ~1e19 in float32): then every entry is looked at."""
        norms = torch._foreach_norm([probe for probe, _, _ in checks], 2)
        if bool(torch.stack(norms).isfinite().all()):
            return True
        culprits = []
        for probe, members, batch in checks:
            parts = batch.split(probe) if batch is not None else [probe]
            culprits += [member for part, member in zip(parts, members) if not bool(part.isfinite().all())]
        if not culprits:
            return True
        if self.nonfinite == "skip":
            return False
        p, group, index = culprits[0]
        raise FloatingPointError(
            f"non-finite gradient (NaN or Inf) in {self._name(p, group, index)}; lower the learning rate or use a "
            "GradScaler, or pass nonfinite='skip' to skip such steps")


def _norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The float32 L2 norm of each gradient (for ``track_grad_norms``)."""
    return list(torch._foreach_norm(grads, dtype=torch.float32))


def channel_directed(
    model: nn.Module,
    optimizer: type[Optimizer] = torch.optim.SGD,
    *,
    metric: str = "sobolev",
    lam: float | None = None,
    direction: str | None = None,
    boundary: str | None = None,
    sigma: float | None = None,
    apply_to: Iterable[str] | None = None,
    nonfinite: str = "raise",
    foreach: bool | None = None,
    **optimizer_kwargs: Any,
) -> ChannelDirected:
    """Build ``optimizer(model.parameters(), **optimizer_kwargs)`` wrapped in :class:`ChannelDirected`.

    Unlike wrapping an optimizer by hand, this knows each parameter's module, so ConvTranspose weights
    are smoothed along their own output axis (dim 1) and error messages name the parameter.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> opt = channel_directed(model, torch.optim.SGD, lr=0.1, momentum=0.9, metric="h0", lam=2.0)
    """
    base = optimizer(model.parameters(), **optimizer_kwargs)
    names: dict[torch.Tensor, str] = {p: n for n, p in model.named_parameters()}
    return ChannelDirected(base, metric, lam, direction, boundary, sigma, apply_to, nonfinite=nonfinite,
                           foreach=foreach, kinds=layer_kinds(model), names=names)
