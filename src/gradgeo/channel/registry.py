"""The registry of channel metrics: which metrics exist, the options each reads with their defaults, the values
they accept and the ranges ``gradgeo tune`` searches, and the checks every place that takes them shares
(:class:`~gradgeo.channel.optim.ChannelDirected` and its param groups, spec strings, ``gradgeo list``).

The built-in metrics (:data:`METRICS`) are registered here. :func:`register_metric` adds a gradient transform of
one's own under a name, and so does every installed package whose ``pyproject.toml`` declares an entry point in the
group ``gradgeo.metrics`` (:data:`ENTRY_POINT_GROUP`), naming a callable that calls :func:`register_metric`:

    [project.entry-points."gradgeo.metrics"]
    mymetrics = "mypackage.metrics:register"

The entry points are loaded once per process, the first time a name is looked up that is not registered yet, all
names are listed, or :func:`register_metric` is called; so a metric of an installed package works in every process
(``gradgeo compare --jobs``, ``gradgeo tune`` workers) without an import in the user's code.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import math
import re
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from gradgeo.channel.transforms import BOUNDARIES, DIRECTIONS

__all__ = ["APPLY_TO", "DEFAULT_LAM", "ENTRY_POINT_GROUP", "FLOAT32_MAX", "LAM_RANGES", "METRICS", "OPTION_DEFAULTS",
           "MetricInfo", "MetricOption", "check_options_used", "metric_info", "metric_names", "register_metric",
           "validate_options"]

#: the built-in metrics; :func:`metric_names` adds the registered ones
METRICS: tuple[str, ...] = ("h0", "sobolev", "h1", "laplacian", "none")
APPLY_TO: tuple[str, ...] = ("conv", "linear", "vector")
#: the entry-point group whose callables register metrics
ENTRY_POINT_GROUP = "gradgeo.metrics"

#: lam used when none is given. Provisional, chosen from the scale analysis in docs/design.md 1b (sobolev at
#: 0.1 keeps the smoothest mode at unit gain); the measured sweeps in results/REPORT.md say what to tune.
DEFAULT_LAM: dict[str, float] = {"h0": 2.0, "sobolev": 0.1, "h1": 0.01}

#: the lam each metric accepts: where its transform of any gradient with entries below 1e26 stays finite in
#: float32 (h0 and sobolev scale what varies across the channels by up to 1/lam; h1's recurrences overflow
#: near lam C^2 = 1e30)
LAM_RANGES: dict[str, tuple[float, float]] = {"h0": (1e-12, math.inf), "sobolev": (1e-12, math.inf),
                                              "h1": (0.0, 1e12)}

#: the largest float32: an option above it overflows the first step on float32 weights
FLOAT32_MAX = 3.4028234663852886e38

# the options that choose where a metric acts (along which axis, on which parameters): ChannelDirected applies them,
# a registered transform never sees them
_WHERE = ("direction", "apply_to")
# names a registered metric's options cannot take: the metric's own key in a param group, the options every metric
# along an axis has, the param-group keys of every base optimizer (lr, weight_decay; ChannelDirected refuses a
# clash with any other of the base's keys), and ChannelDirected's keyword arguments
_RESERVED = ("metric", "params", *_WHERE, "lr", "weight_decay", "base", "nonfinite", "foreach", "track_grad_norms",
             "kinds", "names")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


@dataclasses.dataclass(frozen=True)
class MetricOption:
    """An option of a channel metric: its default, the values it accepts and the range ``gradgeo tune`` searches.

    The type is the default's: ``True``/``False`` a boolean, an ``int`` an integer, a ``float`` a finite number (an
    integer is accepted too), a ``str`` one of ``choices``, a tuple of strings a non-empty tuple of ``choices``
    (written ``a/b`` in a spec string).

    Attributes:
        default: the value a param group takes when neither it nor the spec gives one.
        gt, ge, lt, le: bounds of a number: greater than, at least, less than, at most (None: no bound).
        choices: the accepted values of a text option, or of the items of a tuple option.
        search: ``(low, high)``, ``0 < low < high``: ``gradgeo tune`` searches a number option on a log scale in
            this range unless the spec fixes it; None: never searched.

    Example:
        >>> alpha = MetricOption(0.5, gt=0, le=1, search=(0.05, 1.0))
        >>> alpha.problem("alpha", 2.0, "scaled")
        "alpha must be a finite number > 0, <= 1 for metric 'scaled', got 2.0"
    """

    default: Any
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    search: tuple[float, float] | None = None

    @property
    def type(self) -> str:
        """``"bool"``, ``"integer"``, ``"number"``, ``"choice"`` (one of ``choices``) or ``"choices"`` (some)."""
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "integer"
        if isinstance(self.default, float):
            return "number"
        return "choice" if isinstance(self.default, str) else "choices"

    @property
    def rule(self) -> str:
        """The bounds of a number as listings write them (``"> 0"``, ``">= 1, <= 8"``); ``""`` without bounds."""
        bounds = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        return ", ".join(f"{sign} {value:g}" for sign, value in bounds if value is not None)

    def problem(self, name: str, value: Any, metric: str) -> str | None:
        """What is wrong with ``value`` as option ``name`` of metric ``metric``, or None when it is accepted."""
        kind = self.type
        if kind == "choice":
            return None if value in self.choices else f"unknown {name} {value!r}; expected one of {self.choices}"
        if kind == "choices":
            ok = (not isinstance(value, str) and isinstance(value, Iterable) and bool(value)
                  and all(item in self.choices for item in value))
            return None if ok else f"{name} must be a non-empty tuple drawn from {self.choices}, got {value!r}"
        if kind == "bool":
            return None if isinstance(value, bool) else (f"{name} must be true or false for metric {metric!r}, "
                                                         f"got {value!r}")
        number = not isinstance(value, bool) and isinstance(value, int if kind == "integer" else (int, float))
        if number and (isinstance(value, int) or math.isfinite(value)) and self._within(value):
            return None
        what = "an integer" if kind == "integer" else "a finite number"
        return f"{name} must be {what}{' ' + self.rule if self.rule else ''} for metric {metric!r}, got {value!r}"

    def _within(self, value: float) -> bool:
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def _check(self, name: str, metric: str) -> None:
        """Raise a ValueError when this declaration of option ``name`` cannot work, saying how to write it."""
        where = f"option {name!r} of metric {metric!r}"
        default, kind = self.default, self.type
        if not isinstance(default, (bool, int, float, str, tuple)) or (
                isinstance(default, tuple) and not all(isinstance(item, str) for item in default)):
            raise ValueError(f"{where}: a default is a number, true or false, a text or a tuple of texts (both with "
                             f"their choices), got {default!r}")
        if kind in ("choice", "choices") and not self.choices:
            raise ValueError(f"{where}: declare the accepted values, e.g. MetricOption({default!r}, "
                             f"choices=({(default if kind == 'choice' else 'a')!r}, ...))")
        if self.choices and kind not in ("choice", "choices"):
            raise ValueError(f"{where}: choices are for text options; its default {default!r} is a {kind}")
        if self.rule and kind not in ("integer", "number"):
            raise ValueError(f"{where}: bounds (gt, ge, lt, le) are for numbers; its default {default!r} is a {kind}")
        if (problem := self.problem(name, default, metric)) is not None:
            raise ValueError(f"{where}: the default is not accepted: {problem}")
        if self.search is None:
            return
        if kind != "number":
            raise ValueError(f"{where}: gradgeo tune searches numbers on a log scale; give a search range only to an "
                             f"option with a float default (this one's type: {kind})")
        ends = self.search if isinstance(self.search, tuple) and len(self.search) == 2 else ()
        if not (ends and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ends)
                and 0 < ends[0] < ends[1] < math.inf and not any(self.problem(name, v, metric) for v in ends)):
            raise ValueError(f"{where}: search must be (low, high) with 0 < low < high, both accepted by the option "
                             f"({self.rule or 'any finite number'}), got {self.search!r}")


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """A channel metric as the registry holds it (:func:`metric_info`).

    Attributes:
        name: its name in spec strings and param groups.
        summary: one line for listings.
        options: every option it reads, as declared: its own (``lam``, ``alpha`` ...) and, for a metric along an
            axis, ``direction`` and ``apply_to``.
        transform: the function :func:`register_metric` registered; None for a built-in metric, whose in-place
            kernels, batches and sharded forms :class:`~gradgeo.channel.optim.ChannelDirected` runs itself.
    """

    name: str
    summary: str
    options: Mapping[str, MetricOption]
    transform: Callable[..., torch.Tensor] | None = None

    def defaults(self) -> dict[str, Any]:
        """The options a param group of this metric holds unless given: :data:`OPTION_DEFAULTS` (every group holds
        those of the built-in metrics), then the metric's own defaults."""
        return {**OPTION_DEFAULTS, **{key: option.default for key, option in self.options.items()}}

    def arguments(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :attr:`transform`: the metric's options in ``group`` (or their defaults), less
        ``direction`` and ``apply_to``, which say where the transform is applied, not what it computes."""
        return {key: group.get(key, option.default) for key, option in self.options.items() if key not in _WHERE}

    def transform_(self, grad: torch.Tensor, view_shape: tuple[int, ...], dim: int, options: Mapping[str, Any]
                   ) -> torch.Tensor:
        """In place: ``grad <- transform(grad viewed as view_shape, dim, **options)`` of a registered metric,
        computed in float32 for a half type. Returns the probe of the nonfinite check: ``grad`` itself, which holds
        the result (NaN and Inf stay so when cast, a float16 overflow becomes Inf)."""
        if self.transform is None:
            raise TypeError(f"metric {self.name!r} is built in: ChannelDirected runs its kernels")
        view = grad.reshape(view_shape)  # a view, unless the gradient's memory layout has none (then a copy)
        work = view.float() if grad.dtype in (torch.float16, torch.bfloat16) else view
        result = self.transform(work, dim, **options)
        if not isinstance(result, torch.Tensor) or result.shape != work.shape:
            got = f"shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) else f"a {type(result).__name__}"
            raise ValueError(f"the transform of metric {self.name!r} returned {got} for a gradient viewed as "
                             f"{tuple(work.shape)} (dim {dim}); it must return a tensor of the shape it is given")
        grad.copy_(result.reshape(grad.shape))
        return grad


# the options of the built-in metrics; each reads some of them (lam with its own default)
_DIRECTION = MetricOption("out", choices=DIRECTIONS)
_BOUNDARY = MetricOption("neumann", choices=BOUNDARIES)
_SIGMA = MetricOption(1.0, ge=0, search=(0.1, 10.0))
_APPLY_TO = MetricOption(("conv",), choices=APPLY_TO)
#: the options every param group of a :class:`~gradgeo.channel.optim.ChannelDirected` holds (those of the built-in
#: metrics), with the value a group takes when neither it, the wrapper nor its metric gives one
OPTION_DEFAULTS: dict[str, Any] = {"lam": 1.0, "direction": _DIRECTION.default, "boundary": _BOUNDARY.default,
                                   "sigma": _SIGMA.default, "apply_to": _APPLY_TO.default}


def _lam(metric: str, search: tuple[float, float]) -> MetricOption:
    return MetricOption(DEFAULT_LAM[metric], gt=0, search=search)


# each searched range spans two decades: tune gives every spec the same budget and reports the size of its space
_REGISTRY: dict[str, MetricInfo] = {info.name: info for info in (
    MetricInfo("h0", "re-weighted H0: mean(G) + (G - mean(G)) / lam across the channels", types.MappingProxyType({
        # 1 is the plain gradient; larger damps what varies across channels
        "lam": _lam("h0", (1.0, 100.0)), "direction": _DIRECTION, "apply_to": _APPLY_TO})),
    MetricInfo("sobolev", "Sobolev H~1: the channel mean kept, differences between neighbouring channels damped",
               types.MappingProxyType({
                   # 0.1 keeps the smoothest mode at unit gain (docs/design.md 1b)
                   "lam": _lam("sobolev", (3e-3, 0.3)), "direction": _DIRECTION, "boundary": _BOUNDARY,
                   "apply_to": _APPLY_TO})),
    MetricInfo("h1", "full Sobolev H1: (I + lam C^2 D^T D) g = G across the channels", types.MappingProxyType({
        # toward 0: the plain gradient
        "lam": _lam("h1", (1e-4, 1e-2)), "direction": _DIRECTION, "boundary": _BOUNDARY, "apply_to": _APPLY_TO})),
    # the baseline smooths the flattened tensor on a ring: no direction, no boundary
    MetricInfo("laplacian", "baseline: Laplacian smoothing (LS-SGD, Osher et al. 2018) of the flattened tensor",
               types.MappingProxyType({"sigma": _SIGMA, "apply_to": _APPLY_TO})),
    MetricInfo("none", "the identity: the base optimizer alone (for A/B runs)", types.MappingProxyType({})),
)}
_entry_points_loaded = False
_entry_point_failures: list[str] = []


def register_metric(name: str, transform: Callable[..., torch.Tensor], /, **options: Any) -> MetricInfo:
    """Make ``transform`` the channel metric ``name``, usable wherever a built-in metric is: in
    :class:`~gradgeo.channel.optim.ChannelDirected`, spec strings (``"sgd+NAME:key=value"`` in
    :func:`~gradgeo.channel.factory.create_optimizer`, ``gradgeo compare`` and ``gradgeo tune``) and ``gradgeo list``.

    :class:`~gradgeo.channel.optim.ChannelDirected` calls ``transform(grad, dim, **options)`` at every step for each
    selected gradient, as the built-in metrics: on the gradient viewed along the axis its ``direction`` chooses
    (:func:`~gradgeo.transforms.smoothing_view`: ``dim`` 0 of a conv weight's gradient for ``"out"``, 1 for ``"in"``;
    a 1-D view for ``"flat"``), float32 for half-precision gradients, never for an axis of one channel, one gradient
    per call. It must return a tensor of the shape it was given and leave its input alone; the result replaces the
    gradient and is checked for NaN and Inf under the wrapper's ``nonfinite`` policy. The metric reads ``direction``
    and ``apply_to`` (as the built-in metrics: applied by the wrapper, never passed to ``transform``) and the options
    declared here, each validated wherever it is given. Under FSDP2 a registered metric refuses the sharded (DTensor)
    gradients: ``transform`` would see one rank's shard, not the gradient.

    A script's registration lives in its process; for ``gradgeo`` commands, and workers started apart from the script
    (``--jobs``, ``--storage``), register in an installed package through the entry point group
    ``gradgeo.metrics`` (:data:`ENTRY_POINT_GROUP`), whose callable is called once, the first time metrics are looked
    up.

    Args:
        name: the metric's name in spec strings: lower-case letters, digits, ``_`` and ``-``, starting with a letter;
            not the name of a built-in or an already registered metric.
        transform: ``transform(grad, dim, **options) -> Tensor``, a pure function; its docstring's first line is
            the summary ``gradgeo list`` shows.
        **options: each option's default (its type is the default's: a float option accepts any finite number), or
            a :class:`MetricOption` that also declares its bounds, its choices and the range ``gradgeo tune``
            searches.

    Returns:
        What the registry now holds for ``name``.

    Raises:
        ValueError: a taken or malformed name, an option named like one the wrapper or the base optimizer uses
            (``direction``, ``apply_to``, ``lr`` ...), or an option declaration that cannot work.
        TypeError: ``transform`` cannot be called as ``transform(grad, dim, **options)``.

    Example:
        >>> def scaled(grad, dim, alpha):
        ...     '''alpha times the gradient'''
        ...     return alpha * grad
        >>> info = register_metric("scaled", scaled, alpha=MetricOption(0.5, gt=0, search=(0.05, 5.0)))
        >>> [(key, option.default) for key, option in info.options.items()]
        [('alpha', 0.5), ('direction', 'out'), ('apply_to', ('conv',))]
        >>> # then: create_optimizer(model, "sgd+scaled:alpha=0.25", lr=0.1)
    """
    _load_entry_points()  # the installed packages' metrics first, so that a clash names the later registration
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("a metric name is lower-case letters, digits, '_' and '-', starting with a letter (it is "
                         f"written in spec strings like 'sgd+NAME:key=value'), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"metric {name!r} is already registered ({_origin(_REGISTRY[name])}); register yours "
                         "under another name")
    if not callable(transform):
        raise TypeError(f"the transform of metric {name!r} must be callable as transform(grad, dim, **options), got "
                        f"a {type(transform).__name__}")
    declared: dict[str, MetricOption] = {}
    for key, value in options.items():
        if key in _RESERVED:
            raise ValueError(f"metric {name!r} cannot have an option named {key!r}: ChannelDirected, its param "
                             f"groups or the base optimizer use that name ({', '.join(_RESERVED)}); rename it")
        declared[key] = value if isinstance(value, MetricOption) else MetricOption(value)
        declared[key]._check(key, name)
    _check_signature(name, transform, declared)
    doc = inspect.getdoc(transform)
    summary = doc.strip().splitlines()[0] if doc and doc.strip() else f"registered: {_qualified(transform)}"
    info = MetricInfo(name, summary, types.MappingProxyType({**declared, "direction": _DIRECTION,
                                                             "apply_to": _APPLY_TO}), transform)
    _REGISTRY[name] = info
    return info


def _qualified(transform: Callable[..., Any]) -> str:
    module = getattr(transform, "__module__", None)
    name = getattr(transform, "__qualname__", type(transform).__name__)
    return f"{module}.{name}" if module else name


def _origin(info: MetricInfo) -> str:
    return "built in" if info.transform is None else f"by {_qualified(info.transform)}"


def _check_signature(name: str, transform: Callable[..., Any], declared: Mapping[str, MetricOption]) -> None:
    """Raise a TypeError when ``transform`` cannot take ``(grad, dim, **options)``, before any step calls it."""
    try:
        signature = inspect.signature(transform)
    except (TypeError, ValueError):  # some callables written in C have none: nothing to check
        return
    try:
        signature.bind(None, 0, **{key: option.default for key, option in declared.items()})
    except TypeError as error:
        call = ", ".join(["grad", "dim", *(f"{key}=..." for key in declared)])
        raise TypeError(f"the transform of metric {name!r}, {_qualified(transform)}{signature}, cannot be called as "
                        f"transform({call}): {error}") from None


def _load_entry_points() -> None:
    """Call, once per process, every callable of the entry point group :data:`ENTRY_POINT_GROUP`. A failing one is
    reported (a warning now, and in every later error about an unknown metric) naming the entry point."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True  # first: an entry point's callable calls register_metric, which comes back here
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = point.load()
            if not callable(register):
                raise TypeError(f"it names a {type(register).__name__}, not a callable that registers metrics")
            register()
        except Exception as error:  # a broken package must not break gradgeo: name it and go on
            package = f" of package {point.dist.name!r}" if point.dist is not None else ""
            failure = (f"entry point {point.name!r} = {point.value!r}{package} (group {ENTRY_POINT_GROUP!r}) failed: "
                       f"{type(error).__name__}: {error}; fix or uninstall that package")
            _entry_point_failures.append(failure)
            warnings.warn(failure, RuntimeWarning, stacklevel=2)


def metric_names() -> tuple[str, ...]:
    """The names of every metric: the built-in ones (:data:`METRICS`), then the registered ones in order.

    Example:
        >>> metric_names()[:5]
        ('h0', 'sobolev', 'h1', 'laplacian', 'none')
    """
    _load_entry_points()
    return tuple(_REGISTRY)


def metric_info(name: str) -> MetricInfo:
    """What the registry holds for metric ``name``: a ValueError naming the known metrics when there is none.

    Example:
        >>> metric_info("sobolev").options["lam"].default
        0.1
    """
    info = _REGISTRY.get(name)
    if info is None:
        _load_entry_points()
        info = _REGISTRY.get(name)
    if info is None:
        failed = "".join(f" ({failure})" for failure in _entry_point_failures)
        raise ValueError(f"unknown metric {name!r}; expected one of {tuple(_REGISTRY)} (gradgeo.register_metric "
                         f"adds more){failed}")
    return info


def check_options_used(metric: str, given: Iterable[str]) -> None:
    """Raise a ValueError for an option that ``metric`` does not read (it would be accepted and change nothing),
    naming the metric's own options."""
    own = metric_info(metric).options
    unused = [key for key in given if key not in own]
    if unused:
        raise ValueError(f"metric {metric!r} does not use option {unused[0]!r} (it would change nothing); its "
                         f"options: {', '.join(own) or 'none'}")


def validate_options(group: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the bad value and the accepted ones: ``group["metric"]`` must be registered and each
    option it reads accepted (an option it does not read is not looked at)."""
    metric = group["metric"]
    info = metric_info(metric)
    for key, option in info.options.items():
        if (problem := option.problem(key, group.get(key, option.default), metric)) is not None:
            raise ValueError(problem)
    if "sigma" in info.options and group.get("sigma", 0.0) > FLOAT32_MAX:  # 1 + 4 sigma overflows: NaN at step 1
        raise ValueError(f"sigma must be a finite number >= 0 that float32 holds (at most {FLOAT32_MAX:.3g}), got "
                         f"{group['sigma']!r}")
    if metric in LAM_RANGES and not LAM_RANGES[metric][0] <= group["lam"] <= LAM_RANGES[metric][1]:
        lam, (low, high) = group["lam"], LAM_RANGES[metric]
        raise ValueError(f"lam {lam!r} is outside the range where metric {metric!r} stays finite in float32, "
                         f"[{low:g}, {high:g}]: " + (
                             "below it the transform amplifies the channel differences by 1/lam, so that a "
                             "gradient's entries overflow" if lam < low else
                             "above it every mode but the channel mean is damped below float32's precision and "
                             "the recurrences overflow (use metric 'h0' for the channel mean)"))
    if "direction" not in info.options:
        return  # the baseline smooths the flattened tensor, the identity nothing: no axis to check
    apply_to, direction = group.get("apply_to", _APPLY_TO.default), group.get("direction", _DIRECTION.default)
    if "vector" in apply_to and direction in ("in", "spatial"):
        raise ValueError(f"direction {direction!r} has no axis for per-channel vectors (bias, norm "
                         "weights): drop 'vector' from apply_to or use direction 'out' or 'flat'")
    if "linear" in apply_to and direction == "spatial":
        raise ValueError("direction 'spatial' has no axis for Linear weights (no kernel window): drop 'linear' "
                         "from apply_to or use another direction")
