"""Abstract bases, hyperparameter fields and the shared gradient normalisation.

Every optimizer is an :class:`AbstractOptimizer` holding an options record
(:class:`AbstractOptimizerOptions`, an attrs class whose fields are the keyword
arguments of the optimizer's constructor) and the :class:`~mxopt.OptimizationState`
it reads. Options are validated when they are built and whenever a field is
assigned, with messages that name the optimizer, the parameter, the value and
the allowed range.

The per-element work of an update is a fused kernel (see :mod:`mxopt.kernels.kernel`).
An optimizer says which kernel it uses and computes, on the host and once per
update, the scalars that kernel needs (learning rate, bias corrections,
``grad_scale / batch_size``...).
"""

from __future__ import annotations

import abc
import contextvars
import inspect
import math
from typing import ClassVar

import attrs

from mxopt.core.checks import Interval, check_integer, check_number, owner_name, to_float, to_int
from mxopt.core.fields import flag, hyperparameter, integer, optional_instance
from mxopt.core.schedule import (
    AbstractLearningRateScheduler,
    AbstractMomentumScheduler,
    AbstractSchedule,
    value_at,
)
from mxopt.core.state import OptimizationState

__all__ = [
    "AbstractSchedule",
    "AbstractLearningRateScheduler",
    "AbstractMomentumScheduler",
    "AbstractOptimizerOptions",
    "AbstractOptimizer",
    "hyperparameter",
    "options",
    "normalized_gradient",
    "gradient_scalars",
    "value_at",
]


# --------------------------------------------------------------------------------------
# Reading options


def momentum_value(scheduler, state: OptimizationState) -> float:
    """A momentum scheduler's value at ``state``, checked to be a number in [0, 1)."""
    value = scheduler.value(state)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"momentum_scheduler {scheduler!r} gave {value!r}; a momentum must be a "
            f"number in [0, 1)"
        )
    return float(value)


def read_hyperparameter(opts, name: str, state: OptimizationState) -> float:
    """The value of option ``name`` at ``state``; a schedule's value is range-checked."""
    value = getattr(opts, name)
    if name == "weight_decay":
        multiplier = WD_MULTIPLIER.get()
        if multiplier != 1.0:
            return _read_schedulable(opts, name, value, state) * multiplier
    if type(value) is float:  # the common case, without the (slow) ABC isinstance check
        return value
    return _read_schedulable(opts, name, value, state)


def _read_schedulable(opts, name: str, value, state: OptimizationState) -> float:
    if isinstance(value, AbstractSchedule):
        scheduled = value.value(state)
        try:
            value = float(scheduled)
        except (TypeError, ValueError):
            raise TypeError(
                f"{owner_name(opts)}: {name} is given by the schedule {value!r}, which must "
                f"give a number, got {scheduled!r}"
            ) from None
        interval = attrs.fields_dict(type(opts))[name].metadata["interval"]
        check_number(owner_name(opts), f"{name} (from its schedule)", value, interval)
    return value


# --------------------------------------------------------------------------------------
# Options and optimizers


#: Options every optimizer shares, placed last and in this order in signatures and reprs.
SHARED_OPTIONS = (
    "grad_clip",
    "weight_decay",
    "decoupled_weight_decay",
    "grad_scale",
    "maximize",
    "lr_scheduler",
    "momentum_scheduler",
)


def _shared_options_last(cls, fields):
    own = [f for f in fields if f.name not in SHARED_OPTIONS]
    shared = sorted(
        (f for f in fields if f.name in SHARED_OPTIONS), key=lambda f: SHARED_OPTIONS.index(f.name)
    )
    return own + shared


def _count_revision(instance, attribute, value):
    # Every assignment bumps ``_revision``, which keys the optimizer's cache of kernel
    # scalars (see AbstractOptimizer.cached_kernel_scalars).
    object.__setattr__(instance, "_revision", getattr(instance, "_revision", 0) + 1)
    return value


def options(cls):
    """Class decorator for optimizer options: keyword-only attrs fields, validated on
    construction and assignment, with the optimizer's own options first and the shared
    ones (:data:`SHARED_OPTIONS`) last."""
    cls._revision = 0  # bumped by _count_revision
    return attrs.define(
        cls,
        kw_only=True,
        slots=False,  # room for the _revision counter
        field_transformer=_shared_options_last,
        on_setattr=[attrs.setters.convert, attrs.setters.validate, _count_revision],
    )


@options
class AbstractOptimizerOptions:
    """Base class of optimizer options.

    The fields every optimizer shares are the inputs of
    :func:`normalized_gradient`: ``grad_clip``, ``grad_scale``, ``maximize`` and
    (declared by each optimizer, whose defaults differ) ``weight_decay``; plus
    ``lr_scheduler``, which wins over ``lr`` when given.
    """

    grad_clip: float = hyperparameter(
        0.0, ge=0.0, doc="clip the rescaled gradient to [-grad_clip, grad_clip] when > 0"
    )
    grad_scale: float = hyperparameter(
        1.0, gt=0.0, doc="multiplies the gradient before it is divided by batch_size"
    )
    maximize: bool = flag(False, doc="ascend the objective instead of descending it")
    lr_scheduler: AbstractLearningRateScheduler | None = optional_instance(
        AbstractLearningRateScheduler, doc="learning-rate scheduler; wins over lr when given"
    )


def decoupled_weight_decay_option(default: bool = False):
    """The ``decoupled_weight_decay`` option of optimizers that offer both kinds of decay.

    False: coupled L2, ``weight_decay * W`` is added to the gradient (MXNet.jl).
    True: decoupled decay, ``W *= 1 - lr * weight_decay`` before the step
    (Loshchilov & Hutter's AdamW; Thinc's ``L2_is_weight_decay``, fastai's
    ``decouple_wd``).
    """
    return flag(default, doc="decay the weight directly (AdamW) instead of adding L2 to g")


#: An extra factor on every gradient, set by the updater for the duration of one call
#: (global norm clipping, loss scaling). A context variable, so threads do not share it.
GRAD_MULTIPLIER: contextvars.ContextVar[float] = contextvars.ContextVar(
    "mxopt_grad_multiplier", default=1.0
)
#: Per-index factors on the learning rate and the weight decay (MXNet's lr_mult and
#: wd_mult, parameter groups), set by the updater around each weight's update.
LR_MULTIPLIER: contextvars.ContextVar[float] = contextvars.ContextVar(
    "mxopt_lr_multiplier", default=1.0
)
WD_MULTIPLIER: contextvars.ContextVar[float] = contextvars.ContextVar(
    "mxopt_wd_multiplier", default=1.0
)


def gradient_scalars(opts, state: OptimizationState) -> tuple[float, float, float]:
    """``(rescale, clip, weight_decay)`` for :func:`normalized_gradient` and the kernels.

    ``rescale = ±grad_scale / batch_size`` is formed once in float64 (negative
    with ``maximize``, times the updater's :data:`GRAD_MULTIPLIER` during a
    clipped or loss-scaled update). The weight decay is 0 here when the
    optimizer decays weights directly (``decoupled_weight_decay``); see
    :func:`decay_factor`.
    """
    rescale = read_hyperparameter(opts, "grad_scale", state) / state.batch_size
    multiplier = GRAD_MULTIPLIER.get()
    if multiplier != 1.0:
        rescale *= multiplier
    if opts.maximize:
        rescale = -rescale
    if getattr(opts, "decoupled_weight_decay", False):
        wd = 0.0
    else:
        wd = read_hyperparameter(opts, "weight_decay", state)
    return (rescale, read_hyperparameter(opts, "grad_clip", state), wd)


def decay_factor(opts, state: OptimizationState, lr: float) -> float:
    """``1 - lr * weight_decay`` with ``decoupled_weight_decay``, else exactly 1."""
    if getattr(opts, "decoupled_weight_decay", False):
        return 1.0 - lr * read_hyperparameter(opts, "weight_decay", state)
    return 1.0


def normalized_gradient(opts, state: OptimizationState, weight, grad):
    """The gradient every update starts from, as a new array.

    .. math::

        g = \\pm\\operatorname{clip}\\left(\\nabla \\cdot \\frac{\\text{grad\\_scale}}
        {\\text{batch\\_size}}, -c, c\\right) + \\lambda W

    Clipping happens only when ``grad_clip = c > 0``. The weight-decay term
    :math:`\\lambda W` is added after the clip and is never clipped (it is left
    out when the optimizer decouples its weight decay). The sign flips with
    ``maximize``. ``grad`` is not modified. Works on NumPy and CuPy arrays; the
    result has ``grad``'s dtype.
    """
    if state is None:
        raise RuntimeError(
            "normalized_gradient: state is None; pass the OptimizationState of the training loop"
        )
    rescale, clip, wd = gradient_scalars(opts, state)
    g = grad * rescale
    if clip > 0:
        g.clip(-clip, clip, out=g)
    if wd > 0:
        g += wd * weight
    return g


#: Marks a state array that starts as a copy of the weight (see ``state_spec``).
WEIGHT_COPY = "weight"


class AbstractOptimizer(abc.ABC):
    """Base class of all optimizers.

    An optimizer holds ``opts`` (its options, an instance of ``Options``) and
    ``state`` (the :class:`~mxopt.OptimizationState` it reads; it may be given at
    construction or assigned later, and must be set before the first update).

    Subclasses set ``Options`` and implement :meth:`kernel` and
    :meth:`kernel_scalars`; :func:`mxopt.create_state` and :func:`mxopt.update`
    do the rest.
    """

    Options: ClassVar[type[AbstractOptimizerOptions]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__ and "__signature__" not in cls.__dict__:
            # help() and inspect.signature show the real keyword options.
            keyword = inspect.Parameter.KEYWORD_ONLY
            parameters = [
                inspect.Parameter(f.name, keyword, default=f.default)
                for f in attrs.fields(cls.Options)
            ]
            parameters.append(inspect.Parameter("state", keyword, default=None))
            cls.__signature__ = inspect.Signature(parameters)

    def __init__(self, *, state: OptimizationState | None = None, **options):
        known = attrs.fields_dict(self.Options)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}; "
                f"the options are: {', '.join(known)}, state"
            )
        self.opts = self.Options(**options)
        self.state = state

    @property
    def state(self) -> OptimizationState | None:
        """The :class:`~mxopt.OptimizationState` this optimizer reads."""
        return self._state

    @state.setter
    def state(self, value: OptimizationState | None) -> None:
        if value is not None and not isinstance(value, OptimizationState):
            raise TypeError(
                f"{type(self).__name__}: state must be an OptimizationState or None, "
                f"got {value!r} of type {type(value).__name__}"
            )
        self._state = value

    def require_state(self) -> OptimizationState:
        """The state, or a clear error when none has been set."""
        state = self._state
        if state is None:
            raise RuntimeError(
                f"{type(self).__name__} has no OptimizationState: pass "
                f"state=OptimizationState(batch_size) to the constructor or assign "
                f"optimizer.state before the first update"
            )
        return state

    def gradient_rescale(self, state: OptimizationState) -> float:
        """``grad_scale / batch_size``: what the gradient is multiplied by before use."""
        return read_hyperparameter(self.opts, "grad_scale", state) / state.batch_size

    def lr_value(self, state: OptimizationState) -> float:
        """The learning rate at ``state``: the scheduler's if one is set, else ``lr``
        (times the index's multiplier, :data:`LR_MULTIPLIER`, during an update)."""
        scheduler = self.opts.lr_scheduler
        if scheduler is not None:
            lr = scheduler.value(state)
            if (
                isinstance(lr, bool)
                or not isinstance(lr, (int, float))
                or not (math.isfinite(lr) and lr >= 0)
            ):
                raise ValueError(
                    f"{type(self).__name__}: lr_scheduler {scheduler!r} gave {lr!r}; a "
                    f"learning rate must be a finite number >= 0"
                )
            lr = float(lr)
        else:
            lr = read_hyperparameter(self.opts, "lr", state)
        multiplier = LR_MULTIPLIER.get()
        return lr if multiplier == 1.0 else lr * multiplier

    # -- the kernel protocol -------------------------------------------------------------
    #
    # An update of one weight is: checks, then ``apply``, which runs the kernel(s) with
    # scalars computed on the host. Most optimizers only say which kernel they use
    # (``kernel``) and compute its scalars (``kernel_scalars``); composite ones
    # (Lookahead) or multi-pass ones (LAMB, LARS, Adafactor) override ``apply``.

    @abc.abstractmethod
    def kernel(self):
        """The :class:`mxopt.kernels.kernel.Kernel` this optimizer's options call for."""

    @abc.abstractmethod
    def kernel_scalars(self, state: OptimizationState, step: int, memory: dict) -> tuple:
        """The kernel's scalars for the ``step``-th update (1-based) of one weight.

        ``memory`` holds the per-weight scalars kept between updates (see
        :meth:`next_memory`); it must not be modified here.
        """

    #: True for optimizers that keep per-weight scalars between updates.
    has_memory: ClassVar[bool] = False

    def next_memory(self, state: OptimizationState, step: int, memory: dict) -> dict:
        """The per-weight scalars after a successful ``step``-th update (e.g. Nadam's
        running momentum product). Only called when :attr:`has_memory`."""
        return memory

    def state_spec(self, shape: tuple) -> dict:
        """The state arrays a weight of ``shape`` needs: ``{name: initial value}``.

        The value is a float fill, :data:`WEIGHT_COPY` for a copy of the
        weight, or ``(shape, fill)`` for an array that is not shaped like the
        weight (Adafactor's factors). Defaults to the kernel's state, shaped
        like the weight and filled by :meth:`initial_state_value`.
        """
        return {name: self.initial_state_value(name) for name in self.kernel().state}

    def initial_state_value(self, name: str) -> float:
        """The value a state array starts from (0 unless an optimizer says otherwise)."""
        return 0.0

    def cached_kernel_scalars(self, state: OptimizationState, step: int, memory: dict) -> tuple:
        """:meth:`kernel_scalars`, computed once per (state, options, step).

        Every weight updated in the same mini-batch usually has the same step
        count, so the host math runs once per batch, not once per weight. The
        cache is keyed on the state and the options objects and their
        revisions (bumped by every assignment, ``begin_batch``, ``record_score``...),
        the step and the updater's multipliers; optimizers with per-weight memory
        are not cached.
        """
        if memory:
            return self.kernel_scalars(state, step, memory)
        opts = self.opts
        key = (
            state,
            state._revision,  # bumped by every change of the state
            opts,
            getattr(opts, "_revision", 0),
            step,
            GRAD_MULTIPLIER.get(),
            LR_MULTIPLIER.get(),
            WD_MULTIPLIER.get(),
        )
        cached = self._scalars_cache
        # the objects compared by identity, the rest by value
        if (
            cached is not None
            and cached[0] is state
            and cached[2] is opts
            and cached[1] == key[1]
            and cached[3:8] == key[3:8]
        ):
            return cached[8]
        scalars = self.kernel_scalars(state, step, memory)
        self._scalars_cache = (*key, scalars)
        return scalars

    _scalars_cache = None

    #: True when an update needs the tensor as a whole (per-tensor norms: LAMB, LARS),
    #: so that a ParameterBuffer is updated segment by segment, never as one array.
    per_tensor: ClassVar[bool] = False

    def apply_segments(self, backend, w, g, wstate, offsets, state, step: int, check: bool):
        """:meth:`apply` for a packed buffer whose weights are ``w[offsets[k]:offsets[k+1]]``.

        This default runs :meth:`apply` on each segment in turn (after checking
        every gradient first). LAMB and LARS override it with segmented kernels
        that do all the tensors in a few calls.
        """
        from mxopt.kernels.statistics import GRAD_SQUARES_KERNEL
        from mxopt.training.updater import WeightState

        if check:
            bad = backend.run(GRAD_SQUARES_KERNEL, g, g, (), (), False)[2]
            if bad:
                return int(bad)
        for k in range(len(offsets) - 1):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            flat = {name: a[lo:hi] for name, a in wstate.flat.items()}
            piece = WeightState(
                wstate.index, flat, {name: (hi - lo,) for name in flat}, (hi - lo,),
                wstate.dtype, wstate.backend, wstate.device, step=wstate.step,
            )  # fmt: skip
            piece.memory = wstate.memory
            self.apply(backend, w[lo:hi], g[lo:hi], piece, state, step, False)
        return 0

    def apply(self, backend, w, g, wstate, state: OptimizationState, step: int, check: bool):
        """Run the update's kernel(s) over the flat arrays ``w``, ``g``.

        ``backend`` is :mod:`mxopt.kernels.cpu` or :mod:`mxopt.kernels.cuda`. Everything that
        can fail must happen before the first kernel runs. With ``check``, the
        first kernel counts non-finite gradient values and, if there are any,
        returns their number without writing anything. Returns 0 on success.
        """
        kernel = self.kernel()
        arrays = wstate.arrays_for(kernel)
        scalars = self.cached_kernel_scalars(state, step, wstate.memory)
        return backend.run(kernel, w, g, arrays, scalars, check)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{a.name}={getattr(self.opts, a.name)!r}" for a in attrs.fields(type(self.opts))
        )
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.opts == self.opts

    __hash__ = None  # mutable
