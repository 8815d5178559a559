"""Training strategies for multi-exit (anytime) networks, selectable by name.

A multi-exit network returns K predictions, first exit first; a training step computes their K losses from
one forward pass and hands them to a strategy, which writes the combined gradient into ``p.grad``:

    strategy = make_strategy("osgd", num_exits=3, granularity="tensor")
    losses = [F.cross_entropy(out, y) for out in model(x)]
    optimizer.zero_grad()
    strategy.backward(losses, model.parameters(), progress=step / total_steps)
    optimizer.step()

Every strategy has the same interface (:class:`MultiExitStrategy`): ``backward(losses, params, *,
progress=None, process_group=None)``, ``state_dict()`` and ``load_state_dict(state)``. ``progress`` is the
fraction of training done, in [0, 1]; every strategy accepts it, and those whose rule depends on time
(``"sdn"``) require it, so a training loop can always pass it. Gradients accumulate into ``p.grad`` as with
``loss.backward()``. ``process_group`` is for data-parallel training (DDP): the strategy then averages what
it needs over the ranks itself and every rank writes the direction of the whole (global) batch.

* ``"sum"`` (:class:`SumLoss`): ``sum_k g_k``, the plain summed loss (as in MSDNet). Stateless.
* ``"sdn"`` (:class:`SDN`): ``sum_k w_k(progress) g_k``, SDN's linearly ramped weights. Stateless, needs
  ``progress``.
* ``"adaloss"`` (:class:`AdaLoss`): ``sum_k w_k g_k`` with ``w_k`` inversely proportional to a running
  average of ``L_k``. State: the averages.
* ``"pcgrad"`` (:class:`PCGrad`): conflicting components projected away, then summed. State: the random
  generator that orders the projections.
* ``"osgd"`` (:class:`OSGD`): ``sum_k h_k``, the ordered Gram-Schmidt orthogonalization of the ``g_k``
  (:mod:`gradgeo.osgd`). Stateless.

Here ``g_k`` is the gradient of exit k's loss ``L_k``.

References:
    Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018.
    Kaya, Hong, Dumitras, "Shallow-Deep Networks: Understanding and Mitigating Network Overthinking",
    ICML 2019.
    Hu, Dey, Hebert, Bagnell, "Learning Anytime Predictions in Neural Networks via Adaptive Loss
    Balancing", AAAI 2019.
    Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural Networks",
    ICML 2020.
"""

from __future__ import annotations

import inspect
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import torch

from gradgeo.multiexit import osgd
from gradgeo.multiexit._exit_grads import (
    accumulate_direction,
    average_over_ranks_,
    check_losses,
    check_params,
    exit_gradient_matrix,
)

__all__ = [
    "OSGD",
    "SDN",
    "STRATEGIES",
    "AdaLoss",
    "MultiExitStrategy",
    "PCGrad",
    "SumLoss",
    "make_strategy",
    "strategy_options",
]


class MultiExitStrategy(ABC):
    """How the K per-exit losses of one forward pass become one gradient in ``p.grad``.

    Subclasses implement :meth:`_backward`; :meth:`backward` checks the arguments first. Stateful
    strategies override :meth:`state_dict` and :meth:`load_state_dict` (checkpoint them with the
    optimizer).

    Args:
        num_exits: K, the number of exits (losses per step), ``>= 1``.
    """

    name: ClassVar[str]

    def __init__(self, num_exits: int) -> None:
        if isinstance(num_exits, bool) or not isinstance(num_exits, int) or num_exits < 1:
            raise ValueError(f"num_exits must be an integer >= 1, got {num_exits!r}")
        self.num_exits = num_exits

    def backward(
        self,
        losses: Sequence[torch.Tensor],
        params: Iterable[torch.Tensor],
        *,
        progress: float | None = None,
        process_group: Any = None,
    ) -> None:
        """Compute the strategy's update direction and accumulate it into ``p.grad``.

        Data-parallel training: with ``process_group`` (e.g. ``torch.distributed.group.WORLD``) each rank
        passes the losses of its share of the batch, and the strategy averages the per-exit gradients (and,
        for ``"adaloss"``, the loss values) over the group before combining them, so every rank writes the
        direction one process would compute on the concatenated batch (when the shares are equal). DDP must
        not average as well: run the forward pass and this call inside ``ddp_model.no_sync()``, see
        :func:`gradgeo.osgd.backward`. The linear rules (``"sum"``, ``"sdn"``) then cost one ``all_reduce``
        of the N gradient entries, ``"pcgrad"`` and ``"osgd"`` K of them.

        Args:
            losses: the K per-exit scalar losses of one forward pass, first exit first.
            params: the parameters to train (leaf tensors requiring grad), e.g. ``model.parameters()``.
            progress: fraction of training done, in [0, 1] (e.g. ``step / total_steps``); required by
                strategies whose rule changes over training (``"sdn"``), accepted by all.
            process_group: the ``torch.distributed`` group of the data-parallel ranks; None (default): this
                process's batch alone.

        Returns:
            None; the result is added to ``p.grad`` (as ``loss.backward()`` does), and the autograd graph
                is freed.
        """
        who = f"{type(self).__name__}.backward"
        losses = check_losses(losses, who)
        if len(losses) != self.num_exits:
            raise ValueError(
                f"{who} expected {self.num_exits} losses (one per exit, first exit first), got {len(losses)}"
            )
        params = check_params(params, who)
        if progress is not None:
            _check_progress(progress)
        self._backward(losses, params, progress, process_group)

    @abstractmethod
    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        """The strategy's rule, on arguments that :meth:`backward` has checked."""

    def state_dict(self) -> dict[str, Any]:
        """The strategy's state (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` of the same strategy."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless, got state with keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_exits={self.num_exits})"


def _check_progress(progress: float) -> None:
    if (
        isinstance(progress, bool)
        or not isinstance(progress, (int, float))
        or not 0.0 <= progress <= 1.0  # also rejects NaN
    ):
        raise ValueError(f"progress must be the fraction of training done, in [0, 1], got {progress!r}")


def _weighted_backward(
    losses: list[torch.Tensor],
    weights: Sequence[float] | torch.Tensor,
    params: list[torch.Tensor],
    process_group: Any,
    who: str,
) -> None:
    """Backward of ``sum_k weights[k] * losses[k]`` into ``params`` only (weights are constants); with a
    process group, its gradient averaged over the group's ranks."""
    total = sum(w * loss.reshape(()) for w, loss in zip(weights, losses))
    if process_group is None:
        torch.autograd.backward(total, inputs=params)
        return
    g, reached = exit_gradient_matrix([total], params, who)
    with torch.no_grad():
        accumulate_direction(params, average_over_ranks_(g, process_group)[0], reached)


class SumLoss(MultiExitStrategy):
    """Plain summed loss: the direction is ``sum_k g_k``, the gradient of ``sum_k L_k`` (as in MSDNet).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> SumLoss(2).backward([w.sum(), 3 * w[0]], [w])
        >>> w.grad
        tensor([4., 1.])

    References:
        Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018.
    """

    name = "sum"

    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        _weighted_backward(losses, [1.0] * len(losses), params, process_group, f"{type(self).__name__}.backward")


class SDN(MultiExitStrategy):
    """Shallow-Deep Networks' weighted sum with weights that ramp up linearly over training.

    With ``q_k`` the relative depth of exit k (in (0, 1], the last exit at 1) and ``p`` the training
    progress, the direction is ``sum_k w_k(p) g_k`` with

        w_k(p) = min(q_k, start + p * q_k)    for the internal exits k < K,     w_K = 1,

    as in the SDN reference code (``tau_i = min(C_i, 0.01 + epoch * C_i / epochs)``): the internal
    classifiers start almost switched off and reach weights proportional to their depth by the end.

    Args:
        num_exits: K.
        relative_depths: ``q_1 .. q_{K-1}`` for the internal exits (increasing, in (0, 1]), e.g. the
            fraction of the network's layers or FLOPs before each exit. Default: evenly spaced,
            ``q_k = k / K``.
        start: the weight of every internal exit at progress 0 (SDN: 0.01), ``>= 0``.

    Example:
        >>> SDN(3).weights(0.5)  # q = (1/3, 2/3)
        [0.17666666666666667, 0.3433333333333333, 1.0]

    References:
        Kaya, Hong, Dumitras, "Shallow-Deep Networks: Understanding and Mitigating Network
        Overthinking", ICML 2019.
    """

    name = "sdn"

    def __init__(self, num_exits: int, relative_depths: Sequence[float] | None = None, start: float = 0.01) -> None:
        super().__init__(num_exits)
        if relative_depths is None:
            relative_depths = [k / num_exits for k in range(1, num_exits)]
        if isinstance(relative_depths, (int, float)):  # one internal exit, as a spec writes it: relative_depths=0.5
            relative_depths = [relative_depths]
        if not isinstance(relative_depths, Sequence) or not all(
                isinstance(q, (int, float)) and not isinstance(q, bool) for q in relative_depths):
            raise ValueError(f"relative_depths must be numbers in (0, 1], one per internal exit, written "
                             f"Q1/Q2/...; got {relative_depths!r}")
        depths = [float(q) for q in relative_depths]
        if len(depths) != num_exits - 1:
            raise ValueError(
                f"relative_depths needs one value per internal exit ({num_exits - 1}); the last exit has "
                f"weight 1. Got {len(depths)} values"
            )
        if not all(0.0 < q <= 1.0 for q in depths) or any(a > b for a, b in pairwise(depths)):
            raise ValueError(f"relative_depths must be non-decreasing values in (0, 1], got {depths}")
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start <= 1.0:
            raise ValueError(f"start must be a weight in [0, 1], got {start!r}")
        self.relative_depths = depths
        self.start = float(start)

    def weights(self, progress: float) -> list[float]:
        """``[w_1(progress), ..., w_K(progress)]`` (see the class docstring); ``progress`` in [0, 1]."""
        _check_progress(progress)
        return [min(q, self.start + progress * q) for q in self.relative_depths] + [1.0]

    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        if progress is None:
            raise ValueError(
                "SDN weights ramp up over training: pass backward(..., progress=step / total_steps) "
                "with the fraction of training done, in [0, 1]"
            )
        _weighted_backward(losses, self.weights(progress), params, process_group, f"{type(self).__name__}.backward")


class AdaLoss(MultiExitStrategy):
    """ADALOSS: weights inversely proportional to each exit's running-average loss.

    Each step updates an exponential moving average of the (detached) losses and weights each exit by
    its inverse, normalized to average 1:

        a_k <- decay * a_k + (1 - decay) * L_k    (a_k = L_k at the first step),
        w_k = K * (1 / a_k) / sum_j (1 / a_j),    direction = sum_k w_k g_k.

    The direction is then close to the gradient of ``sum_k log L_k`` (scale-free: every exit counts by
    its relative progress), rescaled so that equal losses give the plain sum and the learning rate of
    ``"sum"`` carries over. The losses must be positive (averages are clamped at ``min_loss``).

    Args:
        num_exits: K.
        decay: EMA decay in [0, 1); 0 uses the current losses only.
        min_loss: floor for the averages so that a zero loss cannot divide by zero, in ``[1e-30, 1e30]``.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> ada = AdaLoss(2)
        >>> ada.backward([w[0], 3 * w[1]], [w])  # losses 1 and 3: weights 1.5 and 0.5
        >>> w.grad
        tensor([1.5000, 1.5000])

    References:
        Hu, Dey, Hebert, Bagnell, "Learning Anytime Predictions in Neural Networks via Adaptive Loss
        Balancing", AAAI 2019.
    """

    name = "adaloss"

    def __init__(self, num_exits: int, decay: float = 0.9, min_loss: float = 1e-8) -> None:
        super().__init__(num_exits)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        if (
            isinstance(min_loss, bool)
            or not isinstance(min_loss, (int, float))
            or not 1e-30 <= min_loss <= 1e30  # its inverse weighs the exits in float32: both must be finite
        ):
            raise ValueError(f"min_loss must be a number in [1e-30, 1e30], got {min_loss!r}")
        self.decay = float(decay)
        self.min_loss = float(min_loss)
        self._averages: torch.Tensor | None = None

    def weights(self) -> torch.Tensor | None:
        """The weights ``w_k`` from the current averages (None before the first step)."""
        return None if self._averages is None else self._inverse_weights(self._averages)

    def _inverse_weights(self, averages: torch.Tensor) -> torch.Tensor:
        inverse = 1.0 / averages.clamp_min(self.min_loss)
        return inverse * (self.num_exits / inverse.sum())

    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        # the whole batch's losses (averaged in their own precision): every rank's weights and state are the same
        current = average_over_ranks_(torch.stack([loss.detach().reshape(()) for loss in losses]), process_group)
        current = current.float()
        if self._averages is None:
            self._averages = current
        else:
            # stays on the device: no host synchronization per step
            self._averages = torch.lerp(current, self._averages.to(current.device), self.decay)
        weights = self._inverse_weights(self._averages)
        _weighted_backward(losses, weights, params, process_group, f"{type(self).__name__}.backward")

    def state_dict(self) -> dict[str, Any]:
        """``{"averages": tensor of K loss averages or None}``."""
        return {"averages": None if self._averages is None else self._averages.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"averages"}:
            raise ValueError(f"AdaLoss state needs exactly the key 'averages', got {sorted(state)}")
        averages = state["averages"]
        if averages is not None:
            averages = torch.as_tensor(averages, dtype=torch.float32)
            if averages.shape != (self.num_exits,):
                raise ValueError(f"AdaLoss state holds {tuple(averages.shape)} averages, expected ({self.num_exits},)")
            averages = averages.clone()
        self._averages = averages

    def __repr__(self) -> str:
        return f"AdaLoss(num_exits={self.num_exits}, decay={self.decay}, min_loss={self.min_loss})"


class PCGrad(MultiExitStrategy):
    """PCGrad (gradient surgery): project away conflicting components, then sum.

    For every exit i, starting from ``g_i^pc = g_i``, the other exits j are visited in a random order
    and each conflict (negative inner product) is projected away:

        if <g_i^pc, g_j> < 0:    g_i^pc <- g_i^pc - (<g_i^pc, g_j> / <g_j, g_j>) g_j,

    and the direction is ``sum_i g_i^pc``. Inner products are over the whole parameter vector. Every
    ``g_i^pc`` is a combination of the original gradients, so the whole procedure runs on the K x K Gram
    matrix ``G G^T`` and touches the K x N gradients only twice (Gram matrix, final combination). The
    order comes from a ``torch.Generator`` seeded with ``seed``, whose state is in :meth:`state_dict`.

    Args:
        num_exits: K.
        seed: seed of the generator that draws the projection orders.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> PCGrad(2).backward([w[0], w[1] - w[0]], [w])  # g_1 = (1, 0), g_2 = (-1, 1) conflict
        >>> w.grad  # (0.5, 0.5) + (0, 1)
        tensor([0.5000, 1.5000])

    References:
        Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    """

    name = "pcgrad"

    def __init__(self, num_exits: int, seed: int = 0) -> None:
        super().__init__(num_exits)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        G, reached = exit_gradient_matrix(losses, params, f"{type(self).__name__}.backward")
        with torch.no_grad():
            G = average_over_ranks_(G, process_group)  # the whole batch's per-exit gradients
            gram = G @ G.T
            squared_norms = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny)  # zero g_j: no-op
            # row i of C holds g_i^pc in the basis of the original gradients: g_i^pc = sum_m C[i, m] g_m
            C = torch.eye(len(losses), dtype=G.dtype, device=G.device)
            for i in range(len(losses)):
                others = [j for j in range(len(losses)) if j != i]
                for r in torch.randperm(len(others), generator=self._generator).tolist():
                    j = others[r]
                    conflict = (C[i] @ gram[:, j]).clamp_max(0.0)
                    C[i, j] -= conflict / squared_norms[j]
            accumulate_direction(params, C.sum(0) @ G, reached)

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": the generator's state}``."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(f"PCGrad state needs exactly the key 'generator', got {sorted(state)}")
        self._generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"PCGrad(num_exits={self.num_exits}, seed={self.seed})"


class OSGD(MultiExitStrategy):
    """Orthogonalized SGD: the direction is ``sum_k h_k``, see :func:`gradgeo.osgd.backward`.

    Args:
        num_exits: K.
        granularity: ``"global"`` (inner products over all parameters) or ``"tensor"`` (per tensor).
        eps: skipping threshold of :func:`gradgeo.osgd.gram_schmidt` (None: machine epsilon).

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> OSGD(2).backward([w[0] + w[1], 2 * w[0]], [w])  # h_2 = (2, 0) - (1, 1)
        >>> w.grad
        tensor([2., 0.])

    References:
        Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural
        Networks", ICML 2020.
    """

    name = "osgd"

    def __init__(self, num_exits: int, granularity: osgd.Granularity = "global", eps: float | None = None) -> None:
        super().__init__(num_exits)
        if granularity not in osgd.GRANULARITIES:
            raise ValueError(f"unknown granularity {granularity!r}; expected one of {osgd.GRANULARITIES}")
        self.granularity = granularity
        self.eps = osgd._check_eps(eps)  # here, not at the first step

    def _backward(
        self, losses: list[torch.Tensor], params: list[torch.Tensor], progress: float | None, process_group: Any
    ) -> None:
        osgd.backward(losses, params, granularity=self.granularity, eps=self.eps, process_group=process_group)

    def __repr__(self) -> str:
        return f"OSGD(num_exits={self.num_exits}, granularity={self.granularity!r}, eps={self.eps})"


STRATEGIES: dict[str, type[MultiExitStrategy]] = {cls.name: cls for cls in (SumLoss, SDN, AdaLoss, PCGrad, OSGD)}


def make_strategy(name: str, num_exits: int, **kwargs: Any) -> MultiExitStrategy:
    """Build the strategy registered under ``name`` in :data:`STRATEGIES`.

    Args:
        name: one of ``"sum"``, ``"sdn"``, ``"adaloss"``, ``"pcgrad"``, ``"osgd"``.
        num_exits: K, the number of exits.
        **kwargs: the strategy's own options (e.g. ``granularity="tensor"`` for ``"osgd"``).

    Returns:
        A :class:`MultiExitStrategy`.

    Example:
        >>> make_strategy("osgd", 3, granularity="tensor")
        OSGD(num_exits=3, granularity='tensor', eps=None)
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown multi-exit strategy {name!r}; known strategies: {sorted(STRATEGIES)}")
    return STRATEGIES[name](num_exits, **kwargs)


def strategy_options(name: str) -> dict[str, tuple[Any, Any]]:
    """The options of the strategy registered under ``name``: the keywords of its constructor after
    ``num_exits``, which :func:`make_strategy` and a strategy spec (``"osgd:granularity=tensor"``) accept.

    Returns:
        option -> ``(type, default)``, the type as annotated and resolved (a ``Literal`` names the choices).

    Example:
        >>> strategy_options("osgd")
        {'granularity': (typing.Literal['global', 'tensor'], 'global'), 'eps': (float | None, None)}
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown multi-exit strategy {name!r}; known strategies: {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    hints = typing.get_type_hints(cls.__init__)
    keywords = list(inspect.signature(cls).parameters.values())[1:]  # all but num_exits
    return {p.name: (hints[p.name], p.default) for p in keywords}
