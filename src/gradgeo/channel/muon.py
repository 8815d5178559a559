"""Muon for the hidden weight matrices, a standard optimizer for everything else, as one optimizer.

Muon (Jordan et al. 2024) steps each hidden weight along the orthogonalized momentum of its gradient. The update
is :class:`torch.optim.Muon`'s, unchanged: this module only lets it act on convolution weights (an
``out x in x k x k`` weight as the ``out x (in k k)`` matrix, the usual reading), and bundles it with an
auxiliary optimizer (SGD or AdamW, built by the caller) for the parameters Muon is not meant for: the first
layer, the head, biases and norms. :class:`MuonWithAux` is one ``torch.optim.Optimizer``: LR schedulers see
all groups, ``state_dict`` holds both optimizers' state, and :class:`~gradgeo.channel.optim.ChannelDirected`
can wrap it like any base (its metric then reshapes the gradient that Muon orthogonalizes).

How a weight becomes a matrix: torch's Muon needs 2-D parameters, so each weight gets a 2-D *view* of its own
storage (rows: the output channels; columns: the other axes in memory order, which for a channels-last
weight is ``k k in``). Orthogonalization does not depend on the order of the columns, so every layout gives the
same update. The view is rebuilt if the weight's storage changes (``model.to(...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["MUON_DEFAULTS", "MuonWithAux", "matrix_view"]

#: torch.optim.Muon's defaults that a spec may change (``muon:momentum=0.9,ns_steps=5``)
MUON_DEFAULTS: dict[str, Any] = {"momentum": 0.95, "nesterov": True, "weight_decay": 0.0, "ns_steps": 5,
                                 "adjust_lr_fn": "original"}


def matrix_view(weight: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A 2-D view ``out x rest`` of ``weight``'s storage and the permutation of its axes that the view reads
    (axis 0 first, the others by decreasing stride); ValueError when no such view exists (a weight that is
    not dense in memory).

    Example:
        >>> w = torch.zeros(8, 3, 3, 3).to(memory_format=torch.channels_last)
        >>> view, order = matrix_view(w)
        >>> view.shape, order
        (torch.Size([8, 27]), (0, 2, 3, 1))
    """
    if weight.dim() < 2:
        raise ValueError(f"Muon steps on weights with 2 or more dims, got shape {tuple(weight.shape)}")
    rest = sorted(range(1, weight.dim()), key=lambda axis: -weight.stride()[axis])
    order = (0, *rest)
    permuted = weight.detach().permute(order)
    if not permuted.is_contiguous():
        raise ValueError(f"a weight of shape {tuple(weight.shape)} and strides {weight.stride()} is not dense in "
                         "memory, so Muon cannot step on it in place: make it contiguous (or channels-last)")
    return permuted.view(weight.shape[0], -1), order


class MuonWithAux(Optimizer):
    """:class:`torch.optim.Muon` on ``params`` (weights with 2+ dims), ``aux`` on the rest, stepped together.

    Args:
        params: the weights (or param groups of them) Muon steps on.
        aux: the optimizer of the other parameters (e.g. SGD with momentum over the head, biases and norms),
            or None. Its param groups become this optimizer's too (the same dicts), after Muon's.
        lr: Muon's learning rate.
        momentum, nesterov, ns_steps, adjust_lr_fn: as in :class:`torch.optim.Muon`.
        weight_decay: as in :class:`torch.optim.Muon`, decoupled: ``p *= 1 - lr * weight_decay`` each step.

    Every group carries ``"muon": True`` (stepped by Muon) or ``False`` (by ``aux``).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
        >>> aux = torch.optim.SGD([p for p in net.parameters() if p.dim() == 1], lr=0.1, momentum=0.9)
        >>> opt = MuonWithAux([net[0].weight, net[1].weight], aux, lr=0.02)
        >>> [g["muon"] for g in opt.param_groups]
        [True, False]
    """

    def __init__(self, params: Iterable[Any], aux: Optimizer | None, *, lr: float, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, ns_steps: int = 5,
                 adjust_lr_fn: str = "original") -> None:
        if aux is not None and not isinstance(aux, Optimizer):
            raise TypeError(f"aux must be a torch.optim.Optimizer or None, got {type(aux).__name__}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn, "muon": True}
        self._aux = aux
        self._views: dict[torch.Tensor, tuple[torch.Tensor, tuple[int, ...], int, tuple[int, ...]]] = {}
        super().__init__(params, defaults)
        # torch's own Muon checks every option (and refuses what it does not support) on stand-in matrices
        self._muon = torch.optim.Muon([{"params": [torch.zeros(1, 1)], **self._muon_options(group)}
                                       for group in self.param_groups])
        if aux is not None:
            overlap = {id(p) for g in self.param_groups for p in g["params"]} & {
                id(p) for g in aux.param_groups for p in g["params"]}
            if overlap:
                raise ValueError(f"{len(overlap)} parameter(s) are in both Muon's groups and aux's; give each to one")
        self._link()

    @staticmethod
    def _muon_options(group: dict[str, Any]) -> dict[str, Any]:
        return {key: group[key] for key in ("lr", "momentum", "nesterov", "weight_decay", "ns_steps", "adjust_lr_fn")}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        muon = param_group.get("muon", True)
        if not muon:
            raise ValueError("add a group that Muon does not step to the aux optimizer instead")
        for p in param_group["params"] if not isinstance(param_group["params"], torch.Tensor) else [
                param_group["params"]]:
            if p.dim() < 2:
                raise ValueError(f"Muon steps on weights with 2 or more dims, got a parameter of shape "
                                 f"{tuple(p.shape)}; give biases and norms to the aux optimizer")
        super().add_param_group(param_group)
        if getattr(self, "_muon", None) is not None:  # a group added after construction
            self._muon.add_param_group({"params": [torch.zeros(1, 1)], **self._muon_options(self.param_groups[-1])})
            self._link()

    def _link(self) -> None:
        """One state and one list of groups: Muon's groups first, then aux's (the same dicts and state)."""
        own = [g for g in self.param_groups if g.get("muon", True)]
        for group in own:
            group["muon"] = True
        if self._aux is not None:
            for group in self._aux.param_groups:
                group["muon"] = False
            self.param_groups = own + self._aux.param_groups
            self._aux.state = self.state

    def _matrix(self, p: torch.Tensor) -> torch.Tensor:
        """The cached 2-D view of ``p`` (rebuilt when its storage or layout changed), its grad set alongside."""
        key = (p.data_ptr(), p.stride())
        cached = self._views.get(p)
        if cached is None or (cached[2], cached[3]) != key:
            view, order = matrix_view(p)
            cached = self._views[p] = (view, order, *key)
        view, order = cached[0], cached[1]
        grad = p.grad
        assert grad is not None
        view.grad = grad.permute(order).reshape(view.shape)
        return view

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Muon step on the matrices, one ``aux`` step on the rest; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        own = [g for g in self.param_groups if g["muon"]]
        for group, inner in zip(own, self._muon.param_groups):
            inner.update(self._muon_options(group))
            inner["params"] = [self._matrix(p) for p in group["params"] if p.grad is not None]
            for p, view in zip([p for p in group["params"] if p.grad is not None], inner["params"]):
                self._muon.state[view] = self.state[p]  # the momentum buffer lives in this optimizer's state
        self._muon.step()
        for inner in self._muon.param_groups:
            for view in inner["params"]:
                view.grad = None
            inner["params"] = []
        self._muon.state.clear()
        if self._aux is not None:
            self._aux.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._aux is not None:  # the loaded groups are new dicts: hand aux its part again
            count = sum(1 for g in self.param_groups if g["muon"])
            self._aux.param_groups = self.param_groups[count:]
            self._aux.state = self.state
        self._views.clear()
