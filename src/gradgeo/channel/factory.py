"""Optimizers from spec strings: ``"sgd"``, ``"sgd+sobolev:lam=0.5"``, ``"adamw:lr=1e-3+h0:lam=2"``.

A spec is ``BASE[:key=value,...][+METRIC[:key=value,...]]``. ``BASE`` is one of :data:`BASES`; its options
(``lr``, ``momentum``, ``weight_decay``, ``nesterov``, ``betas``...) override the keyword defaults given to
:func:`create_optimizer`. ``METRIC`` is a channel metric of :mod:`gradgeo.channel.registry`, built in
(:data:`~gradgeo.channel.registry.METRICS`) or registered, with the options it reads (:func:`metric_options`:
``lam``, ``direction``, ``boundary``, ``sigma``, ``apply_to`` as ``conv/linear/vector``, or a registered metric's
own). The same strings drive the command line (``gradgeo compare``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from gradgeo.channel.muon import MUON_DEFAULTS, MuonWithAux
from gradgeo.channel.optim import ChannelDirected, layer_kinds
from gradgeo.channel.registry import FLOAT32_MAX, metric_info, validate_options

__all__ = ["BASES", "SPEC_GRAMMAR", "OptimizerSpec", "SpecOption", "base_options",
           "canonical_spec", "create_optimizer", "metric_options", "parse_options", "parse_spec", "spec_value"]

#: how an optimizer spec is written
SPEC_GRAMMAR = "BASE[:key=value,...][+METRIC[:key=value,...]]"

BASES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "muon": MuonWithAux,  # torch.optim.Muon on the hidden weights, "aux" (sgd or adamw) on the rest
}
# options each base understands, from the spec string or the keyword defaults
_BASE_OPTIONS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "weight_decay", "nesterov", "dampening"),
    "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
    "adamw": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
    "rmsprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    "adagrad": ("lr", "lr_decay", "weight_decay", "eps"),
    "muon": ("lr", "momentum", "nesterov", "weight_decay", "ns_steps", "adjust_lr", "aux", "aux_lr", "edges"),
}
# the options a muon spec writes mean Muon's own (its lr, momentum ...); the keyword defaults of create_optimizer
# (a run's --lr, --momentum, --weight-decay ...) go to the aux optimizer, and --lr also to Muon unless the spec
# sets lr. adjust_lr is torch.optim.Muon's adjust_lr_fn; edges: whether the first layer and the head go to the
# aux optimizer (the usual split) or to Muon
_MUON_SPEC_DEFAULTS: dict[str, Any] = {"lr": None, **{k: v for k, v in MUON_DEFAULTS.items() if k != "adjust_lr_fn"},
                                       "adjust_lr": MUON_DEFAULTS["adjust_lr_fn"], "aux": "sgd", "aux_lr": None,
                                       "edges": "aux"}
_CHOICES: dict[str, tuple[str, ...]] = {"adjust_lr": ("original", "match_rms_adamw"), "aux": ("sgd", "adamw"),
                                        "edges": ("aux", "muon")}
# what each base option must be: a finite number with a bound, a boolean, or Adam's pair of betas
_OPTION_RULES: dict[str, str] = {"lr": "> 0", "momentum": ">= 0", "weight_decay": ">= 0", "dampening": ">= 0",
                                 "eps": ">= 0", "alpha": ">= 0", "lr_decay": ">= 0", "nesterov": "bool",
                                 "amsgrad": "bool", "centered": "bool", "betas": "betas", "ns_steps": "int 1..99",
                                 "aux_lr": "> 0", "adjust_lr": "choice", "aux": "choice", "edges": "choice"}


@dataclasses.dataclass(frozen=True)
class SpecOption:
    """One option of a spec string, as :func:`base_options` and :func:`metric_options` describe it.

    Attributes:
        name: the key, as in ``lam=0.1``.
        type: ``"number"``, ``"bool"``, ``"pair"`` (two numbers written ``B1/B2``), ``"choice"`` (one of
            ``choices``) or ``"choices"`` (some of ``choices``, written ``a/b``).
        default: the value used when the spec leaves the option out; ``None`` for ``lr``, which has none (write
            it in the spec or pass ``lr=`` to :func:`create_optimizer`).
        rule: the bound a number must keep (``"> 0"``, ``">= 0"``, ``"in [0, 1)"``), else ``""``.
        choices: the accepted values of a choice.
    """

    name: str
    type: str
    default: Any
    rule: str = ""
    choices: tuple[str, ...] = ()

    @property
    def written(self) -> str | None:
        """The option with its default as a spec writes it (``betas=0.9/0.999``), or None without a default."""
        if self.default is None:
            return None
        value = self.default
        parts = value if isinstance(value, (tuple, list)) else (value,)
        return f"{self.name}=" + "/".join(str(v).lower() if isinstance(v, bool) else str(v) for v in parts)


def base_options(base: str) -> tuple[SpecOption, ...]:
    """The options spec strings accept for base optimizer ``base`` (one of :data:`BASES`), with the defaults
    :func:`create_optimizer` uses: its own keyword defaults (no ``lr``, ``weight_decay`` 0), else torch's.

    Example:
        >>> [o.written for o in base_options("sgd")]
        [None, 'momentum=0', 'weight_decay=0.0', 'nesterov=false', 'dampening=0']
    """
    if base not in BASES:
        raise ValueError(f"unknown base optimizer {base!r}; expected one of {tuple(BASES)}")
    ours = inspect.signature(create_optimizer).parameters
    torch_defaults = inspect.signature(BASES[base]).parameters
    options = []
    for key in _BASE_OPTIONS[base]:
        if base == "muon":
            default = _MUON_SPEC_DEFAULTS[key]
        else:
            default = ours[key].default if key in ours else torch_defaults[key].default
        rule = _OPTION_RULES[key]
        kind = {"bool": "bool", "betas": "pair", "choice": "choice"}.get(rule, "number")
        options.append(SpecOption(key, kind, default, {"bool": "", "betas": "in [0, 1)", "choice": ""}.get(rule, rule),
                                  _CHOICES.get(key, ())))
    return tuple(options)


def metric_options(metric: str) -> tuple[SpecOption, ...]:
    """The options metric ``metric`` (built in or registered: :func:`~gradgeo.channel.registry.metric_names`) reads,
    with the defaults of :class:`~gradgeo.channel.optim.ChannelDirected` (``lam``: ``DEFAULT_LAM[metric]``). A spec
    that gives another metric option is refused: it would change nothing for this metric.

    Example:
        >>> [o.written for o in metric_options("sobolev")]
        ['lam=0.1', 'direction=out', 'boundary=neumann', 'apply_to=conv']
    """
    return tuple(SpecOption(key, option.type, option.default, option.rule, option.choices)
                 for key, option in metric_info(metric).options.items())


def _option_problem(key: str, value: Any) -> str | None:
    """What is wrong with the value of base option ``key``, or None."""
    rule = _OPTION_RULES[key]

    def number(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

    if rule == "bool":
        return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"
    if rule == "betas":
        ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(number(v) and 0 <= v < 1 for v in value)
        return None if ok else f"{key} must be two numbers in [0, 1) written B1/B2, got {value!r}"
    if rule == "choice":
        return None if value in _CHOICES[key] else f"{key} must be one of {', '.join(_CHOICES[key])}, got {value!r}"
    if rule == "int 1..99":
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 99
        return None if ok else f"{key} must be an integer in 1..99, got {value!r}"
    if not number(value) or value < 0 or (rule == "> 0" and value == 0):
        return f"{key} must be a finite number {rule}, got {value!r}"
    if value > FLOAT32_MAX:  # torch refuses it at the first step on float32 weights
        return f"{key} must be a finite number {rule} that float32 holds (at most {FLOAT32_MAX:.3g}), got {value!r}"
    return None


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A parsed optimizer spec: the base optimizer and the optional channel metric with their options."""

    base: str
    base_options: dict[str, Any]
    metric: str
    metric_options: dict[str, Any]
    text: str

    @property
    def label(self) -> str:
        """The spec as written: a stable name for tables, plots and result folders."""
        return self.text


def spec_value(text: str) -> Any:
    """The value of a ``key=value`` option (spec strings, model options): numbers (an integer beyond any float is
    infinite), booleans, ``a/b`` tuples (``betas=0.9/0.99``, ``apply_to=conv/linear``), else the text.

    Example:
        >>> spec_value("0.9/0.99"), spec_value("true"), spec_value("gelu")
        ((0.9, 0.99), True, 'gelu')
    """
    if "/" in text:
        return tuple(spec_value(part) for part in text.split("/"))
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if isinstance(value, int) and abs(value) > sys.float_info.max:  # no float holds it: infinite, and refused
            return math.inf if value > 0 else -math.inf
        return value
    return text


def parse_options(part: str, allowed: tuple[str, ...], where: str, spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``NAME[:key=value,...]`` into the lower-cased name and its options (values as in spec strings).

    Args:
        part: the text to parse, e.g. ``"osgd:granularity=tensor"``.
        allowed: the option keys the named thing accepts.
        where: what the name names, for errors (``"optimizer"``, ``"metric"``, ``"strategy"``).
        spec: the whole spec, for errors.

    Returns:
        ``(name, options)``.

    Example:
        >>> parse_options("sdn:start=0.1", ("start",), "strategy", "sdn:start=0.1")
        ('sdn', {'start': 0.1})
    """
    name, _, rest = part.partition(":")
    name = name.strip().lower()
    options: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise ValueError(f"bad option {item!r} in {where} spec {spec!r}: write key=value")
        if "=" in value:
            raise ValueError(f"bad option {item!r} in {where} spec {spec!r}: separate options with ',', "
                             f"e.g. {name}:{key}={value.split(':')[0].split(',')[0]},...")
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for {where} {name!r} in spec {spec!r}; accepted: {allowed}")
        if key in options:
            raise ValueError(f"option {key!r} is given twice in {where} spec {spec!r}; write it once")
        options[key] = spec_value(value.strip())
    return name, options


def parse_spec(spec: str) -> OptimizerSpec:
    """Parse ``BASE[:k=v,...][+METRIC[:k=v,...]]`` with a clear error for anything unknown.

    Example:
        >>> parse_spec("sgd:lr=0.1+sobolev:lam=0.5,boundary=periodic").metric_options
        {'lam': 0.5, 'boundary': 'periodic'}
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an optimizer spec is a non-empty string like 'sgd+sobolev:lam=0.5', got {spec!r}")
    parts = spec.strip().split("+")
    if len(parts) > 2:
        raise ValueError(f"optimizer spec {spec!r} has more than one '+': write {SPEC_GRAMMAR}")
    base_name = parts[0].partition(":")[0].strip().lower()
    if base_name not in BASES:
        raise ValueError(f"unknown base optimizer {base_name!r} in spec {spec!r}; expected one of {tuple(BASES)}")
    base, base_options = parse_options(parts[0], _BASE_OPTIONS[base_name], "optimizer", spec)
    metric, metric_options = "none", dict[str, Any]()
    if len(parts) == 2:
        try:
            info = metric_info(parts[1].partition(":")[0].strip().lower())
        except ValueError as error:
            raise ValueError(f"{error} in optimizer spec {spec!r}") from None
        metric, metric_options = parse_options(parts[1], tuple(info.options), "metric", spec)
        for key, value in metric_options.items():  # one of several choices, written alone
            if info.options[key].type == "choices" and isinstance(value, str):
                metric_options[key] = (value,)
    for key, value in base_options.items():
        if (problem := _option_problem(key, value)) is not None:
            raise ValueError(f"{problem} in optimizer spec {spec!r}")
    if metric != "none":  # ChannelDirected's own checks, with its defaults for the options the spec leaves out
        try:
            validate_options({"metric": metric, **info.defaults(), **metric_options})
        except ValueError as error:
            raise ValueError(f"{error} in optimizer spec {spec!r}") from None
    return OptimizerSpec(base, base_options, metric, metric_options, spec.strip())


def canonical_spec(spec: str | OptimizerSpec) -> tuple[Any, ...]:
    """What a spec means, independent of how it is written (case, spaces, option order, ``0.1`` or ``1e-1``):
    two specs with equal canonical forms build the same optimizer.

    Example:
        >>> canonical_spec("SGD + sobolev:boundary=periodic, lam=1e-1") == canonical_spec(
        ...     "sgd+sobolev:lam=0.1,boundary=periodic")
        True
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    return (parsed.base, tuple(sorted(parsed.base_options.items())), parsed.metric,
            tuple(sorted(parsed.metric_options.items())))


def _named_parameters(model_or_params: nn.Module | Iterable[torch.Tensor]) -> list[tuple[str | None, torch.Tensor]]:
    """The trainable parameters, with their names when a model is given."""
    named: list[tuple[str | None, torch.Tensor]]
    if isinstance(model_or_params, nn.Module):
        named = list(model_or_params.named_parameters())
    elif isinstance(model_or_params, torch.Tensor):
        raise TypeError("create_optimizer takes a model or an iterable of parameters, got one tensor; wrap it "
                        "in a list")
    else:
        named = [(None, p) for p in model_or_params]
        if any(isinstance(p, dict) for _, p in named):
            raise TypeError("create_optimizer builds its own parameter groups (weight decay on weights only); "
                            "pass a model or a flat iterable of parameters, not param group dicts")
    return [(name, p) for name, p in named if p.requires_grad]


def _param_groups(named: list[tuple[str | None, torch.Tensor]], weight_decay: float, skip: set[str] | None,
                  lr: float, scales: dict[str, float]) -> list[dict[str, Any]]:
    """Param groups by weight decay and learning rate. Weight decay on weights only, unless ``skip`` is None
    (then on all): biases and norm parameters (all 1-D tensors) and the parameters named in ``skip`` (a model's
    ``no_weight_decay()``, as in timm) get none. A parameter named in ``scales`` (a model's
    ``param_lr_scales()``) trains at ``lr`` times its scale (its group holds that ``lr``)."""
    groups: dict[tuple[bool, float], list[torch.Tensor]] = {}
    for name, p in named:
        decays = skip is None or not (p.dim() <= 1 or name in skip)
        groups.setdefault((decays, scales.get(name or "", 1.0)), []).append(p)
    ordered = sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1] != 1.0, item[0][1]))
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, **({"lr": lr * scale} if scale != 1.0
                                                                                      else {})}
            for (decays, scale), params in ordered]


def _lr_scales(model: nn.Module | Iterable[torch.Tensor]) -> dict[str, float]:
    """A model's ``param_lr_scales()`` (name -> learning-rate multiplier), checked; {} without one."""
    method = getattr(model, "param_lr_scales", None) if isinstance(model, nn.Module) else None
    if method is None:
        return {}
    scales = dict(method())
    names = {name for name, _ in model.named_parameters()}  # type: ignore[union-attr]
    for name, scale in scales.items():
        if name not in names:
            raise ValueError(f"{type(model).__name__}.param_lr_scales() names {name!r}, which is not a parameter")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{type(model).__name__}.param_lr_scales() gives {name!r} the scale {scale!r}; "
                             "expected a finite number > 0")
    return {name: float(scale) for name, scale in scales.items()}


def _edge_weights(model: nn.Module | Iterable[torch.Tensor], named: list[tuple[str | None, torch.Tensor]]
                  ) -> set[torch.Tensor]:
    """The weights of the first layer and of the head: of a model, the first and the last module (in
    registration order) owning a weight with 2+ dims, trainable or not; of a parameter list, its first and last
    tensor with 2+ dims."""
    if isinstance(model, nn.Module):
        weights = (getattr(m, "weight", None) for m in model.modules())
        layers = [w for w in weights if isinstance(w, torch.Tensor) and w.dim() >= 2]
    else:
        layers = [p for _, p in named if p.dim() >= 2]
    return {layers[0], layers[-1]} if layers else set()


def _muon(model: nn.Module | Iterable[torch.Tensor], named: list[tuple[str | None, torch.Tensor]],
          spec: OptimizerSpec, lr: float | None, weight_decay: float, skip: set[str] | None,
          scales: dict[str, float], defaults: dict[str, Any]) -> MuonWithAux:
    """The optimizer of a ``muon`` spec: torch.optim.Muon on the hidden weights (2+ dims; the first layer and
    the head too with ``edges=muon``), the ``aux`` optimizer on the rest with the keyword defaults."""
    options = {**_MUON_SPEC_DEFAULTS, **spec.base_options}
    muon_lr = options["lr"] if options["lr"] is not None else lr
    aux_lr = options["aux_lr"] if options["aux_lr"] is not None else lr
    if muon_lr is None or aux_lr is None:
        raise ValueError(f"no learning rate for spec {spec.text!r}: pass lr=... (Muon's and the aux optimizer's), "
                         "or write muon:lr=...,aux_lr=...")
    edges = _edge_weights(model, named) if options["edges"] == "aux" else set()
    matrices = [p for _, p in named if p.dim() >= 2 and p not in edges]
    if not matrices:
        raise ValueError(f"spec {spec.text!r}: the model has no hidden weight with 2+ dims for Muon to step on")
    rest = [(name, p) for name, p in named if p.dim() < 2 or p in edges]
    aux_base = options["aux"]
    aux_options = {k: v for k, v in defaults.items() if k in _BASE_OPTIONS[aux_base] and v is not None}
    aux_class: Any = BASES[aux_base]  # SGD or AdamW, both take lr
    aux = aux_class(_param_groups(rest, weight_decay, skip, aux_lr, scales), lr=aux_lr, **aux_options) if rest else None
    return MuonWithAux(matrices, aux, lr=muon_lr, momentum=options["momentum"], nesterov=options["nesterov"],
                       weight_decay=options["weight_decay"], ns_steps=options["ns_steps"],
                       adjust_lr_fn=options["adjust_lr"])


def create_optimizer(
    model: nn.Module | Iterable[torch.Tensor],
    spec: str | OptimizerSpec,
    *,
    lr: float | None = None,
    weight_decay: float = 0.0,
    exclude_from_decay: bool = True,
    nonfinite: str = "raise",
    foreach: bool | None = None,
    **defaults: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer a spec string names, for ``model`` (timm's ``create_optimizer_v2`` style).

    Keyword arguments are defaults that options written in the spec override; a default the base does not
    take (``momentum`` for Adam) is ignored, an option no base takes is an error. Weight decay skips biases
    and norm parameters (every tensor with at most one dim) and, as in timm, the names a model's
    ``no_weight_decay()`` method returns, unless ``exclude_from_decay=False``. A spec with a metric returns a
    :class:`~gradgeo.channel.optim.ChannelDirected` that knows every parameter's module type; without one, the
    bare torch optimizer. Parameters that do not require grad are left out.

    Args:
        model: the model, or an iterable of its parameters (then layer kinds come from the shapes: 3+ dims
            is a convolution weight, see :class:`~gradgeo.channel.optim.ChannelDirected`).
        spec: ``BASE[:k=v,...][+METRIC[:k=v,...]]``, e.g. ``"sgd+sobolev:lam=0.1"`` (see :func:`parse_spec`).
        lr: the learning rate, unless the spec sets one.
        weight_decay: the weight decay of the weights, unless the spec sets one.
        exclude_from_decay: keep biases, norm parameters and ``no_weight_decay()`` names out of weight decay.
        nonfinite: :class:`~gradgeo.channel.optim.ChannelDirected`'s NaN/Inf policy (``"raise"`` or ``"skip"``).
        foreach: :class:`~gradgeo.channel.optim.ChannelDirected`'s batching of small tensors.
        **defaults: further base options (``momentum``, ``nesterov``, ``betas``, ``eps``...).

    Returns:
        The optimizer: a :class:`~gradgeo.channel.optim.ChannelDirected` around the base when the spec has a metric.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        >>> opt = create_optimizer(model, "sgd+sobolev:lam=0.1", lr=0.1, momentum=0.9, weight_decay=5e-4)
        >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]  # conv weight; bias and BN
        [(1, 0.0005), (3, 0.0)]
    """
    parsed = spec if isinstance(spec, OptimizerSpec) else parse_spec(spec)
    known = {k for accepted in _BASE_OPTIONS.values() for k in accepted}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"unknown optimizer options {unknown}; accepted: {sorted(known)}")
    # a default that another base understands (momentum for a list mixing sgd and adam) is dropped here
    accepted = _BASE_OPTIONS[parsed.base]
    options = {k: v for k, v in {"lr": lr, **defaults}.items() if v is not None and k in accepted}
    for key, value in options.items():
        if (problem := _option_problem(key, value)) is not None:
            raise ValueError(f"{problem} (keyword argument of create_optimizer)")
    options.update(parsed.base_options)
    wd = options.pop("weight_decay", weight_decay)
    if "lr" not in options:
        raise ValueError(f"no learning rate for spec {parsed.text!r}: pass lr=... or write {parsed.base}:lr=...")
    named = _named_parameters(model)
    if not named:
        raise ValueError("create_optimizer found no parameters that require grad")
    no_weight_decay = getattr(model, "no_weight_decay", None)  # timm's convention, on any model
    skip = (set(no_weight_decay()) if no_weight_decay is not None else set()) if exclude_from_decay else None
    scales = _lr_scales(model)
    base: torch.optim.Optimizer
    if parsed.base == "muon":
        base = _muon(model, named, parsed, lr, weight_decay, skip, scales, defaults)
    else:
        base = BASES[parsed.base](_param_groups(named, wd, skip, options["lr"], scales), **options)
    if parsed.metric == "none":
        return base
    if not isinstance(model, nn.Module):
        return ChannelDirected(base, parsed.metric, **parsed.metric_options, nonfinite=nonfinite, foreach=foreach)
    return ChannelDirected(base, parsed.metric, **parsed.metric_options, nonfinite=nonfinite, foreach=foreach,
                           kinds=layer_kinds(model), names={p: n for n, p in named if n is not None})
