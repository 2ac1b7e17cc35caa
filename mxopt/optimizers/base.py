"""The optimizer protocol: what an optimizer declares, and how it reads its options.

An optimizer is an :class:`AbstractOptimizer` holding an options record (``opts``, see
:mod:`mxopt.optimizers.options`) and the :class:`~mxopt.OptimizationState` it reads.
Its update of one weight has two halves, which the step engine
(:mod:`mxopt.training.engine`) runs in this order for every weight of a step before
anything is written:

1. **host**: :meth:`AbstractOptimizer.prepare` turns the options read at the state
   (:class:`OptionValues`, with the step's multipliers applied), the weight's update
   count and its per-weight scalars into the kernel's scalars. Everything that can fail (a schedule
   giving a bad value, a bias correction of 0) fails here.
2. **device**: :meth:`AbstractOptimizer.apply` runs the kernel(s) over the flat
   arrays, with nothing left to check.

Most optimizers only declare a :class:`~mxopt.kernels.kernel.Kernel` (:meth:`kernel`)
and its scalars by name (:meth:`kernel_scalars`); multi-pass ones (LAMB, LARS,
Adafactor) and wrappers (Lookahead) override :meth:`prepare` and :meth:`apply`.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import attrs

from mxopt.core.checks import check_number, owner_name, shown
from mxopt.core.schedule import AbstractSchedule
from mxopt.core.state import OptimizationState
from mxopt.kernels.kernel import Kernel
from mxopt.kernels.statistics import GRAD_SQUARES_KERNEL

__all__ = [
    "OPTIMIZERS",
    "WEIGHT_COPY",
    "About",
    "AbstractOptimizer",
    "Multipliers",
    "OptionValues",
    "StateArrays",
    "momentum_value",
    "normalized_gradient",
    "option_values",
    "register",
]

#: Every optimizer class by name: the one table the tests, the docs, the registry of
#: config names and the benchmarks read. Filled by :func:`register`.
OPTIMIZERS: dict[str, type] = {}


def register(cls):
    """Class decorator: add an optimizer to :data:`OPTIMIZERS` under its class name."""
    if not (isinstance(cls, type) and issubclass(cls, AbstractOptimizer)):
        raise TypeError(f"register: {shown(cls)} is not an AbstractOptimizer subclass")
    if OPTIMIZERS.setdefault(cls.__name__, cls) is not cls:
        raise ValueError(
            f"register: an optimizer called {shown(cls.__name__)} is already registered"
        )
    return cls


@attrs.frozen
class About:
    """What the documentation says of an optimizer besides its docstring.

    Args:
        family: the page of the optimizer reference it belongs on (``"sgd"``,
            ``"adam-family"``, ``"adaptive"``, ``"others"``, ``"wrappers"``).
        same_as: the updates of other libraries it reproduces, and with which settings.
        weight_decay: how it applies ``weight_decay`` (coupled L2, decoupled...).
        epsilon: where its epsilon goes (``""`` if it has none).
        examples: option sets whose state the memory table shows (``{}``: the defaults);
            an option whose value must be made fresh (a wrapped optimizer) is given as a
            function of no arguments.
    """

    family: str
    same_as: str = ""
    weight_decay: str = ""
    epsilon: str = ""
    examples: tuple = ({},)


#: Marks a state array that starts as a copy of the weight (see ``state_spec``).
WEIGHT_COPY = "weight"


class Multipliers(NamedTuple):
    """Factors one weight's step applies: on the learning rate and the weight decay (its
    parameter group's ``lr_mult`` and ``wd_mult``) and on the gradient (global-norm
    clipping, loss scaling). Explicit arguments of every step, never hidden state."""

    lr: float = 1.0
    wd: float = 1.0
    grad: float = 1.0


NO_MULTIPLIERS = Multipliers()


class OptionValues:
    """An optimizer's options read at a state, as plain attributes: what its
    :meth:`~AbstractOptimizer.kernel_scalars` computes from.

    Every option is an attribute: a number (a schedule's value at the state, checked
    against the option's range), a flag, or whatever else the option holds.
    ``weight_decay`` comes times the weight's ``wd`` multiplier. Derived values:

    * ``lr``: the learning rate in effect: the scheduler's if one is set, else ``lr``;
      times the weight's ``lr`` multiplier;
    * ``rescale``: ``±grad_scale / batch_size`` in float64 (negative with ``maximize``,
      times the ``grad`` multiplier during a clipped or loss-scaled step);
    * ``l2``: the coupled weight decay added to the gradient, 0 when the optimizer
      decays weights directly (``decoupled_weight_decay``);
    * ``decay_factor``: ``1 - lr * weight_decay`` with ``decoupled_weight_decay``, else 1;
    * ``state``: the :class:`~mxopt.OptimizationState` they were read at.

    They are made by :func:`option_values` and shared, so they are never modified.
    """

    def __repr__(self) -> str:
        return f"OptionValues({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _scheduled(opts, name: str, value, state: OptimizationState) -> float:
    scheduled = value.value(state)
    try:
        value = float(scheduled)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner_name(opts)}: {name} is given by the schedule {shown(value)}, which must "
            f"give a number, got {shown(scheduled)}"
        ) from None
    interval = attrs.fields_dict(type(opts))[name].metadata["interval"]
    check_number(owner_name(opts), f"{name} (from its schedule)", value, interval)
    return value


def _learning_rate(opts, values: dict, state: OptimizationState) -> float:
    scheduler = getattr(opts, "lr_scheduler", None)
    if scheduler is None:
        return values.get("lr", 0.0)
    lr = scheduler.value(state)
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not (math.isfinite(lr) and lr >= 0)
    ):
        raise ValueError(
            f"{owner_name(opts)}: lr_scheduler {shown(scheduler)} gave {shown(lr)}; a learning "
            f"rate "
            f"must be a finite number >= 0"
        )
    return float(lr)


def _read_options(opts, state: OptimizationState, mult: Multipliers) -> OptionValues:
    values = {}
    for field in attrs.fields(type(opts)):
        value = getattr(opts, field.name)
        if isinstance(value, AbstractSchedule) and "interval" in field.metadata:
            value = _scheduled(opts, field.name, value, state)
        values[field.name] = value
    out = OptionValues()
    out.__dict__.update(values)
    out.state = state
    out.mult = mult
    if "grad_scale" not in values:  # not an optimizer's own options (a wrapper's)
        return out
    if "weight_decay" in values and mult.wd != 1.0:
        out.weight_decay *= mult.wd
    lr = _learning_rate(opts, values, state)
    out.lr = lr if mult.lr == 1.0 else lr * mult.lr
    rescale = values["grad_scale"] / state.batch_size
    if mult.grad != 1.0:
        rescale *= mult.grad
    out.rescale = -rescale if values["maximize"] else rescale
    decoupled = values.get("decoupled_weight_decay", False)
    weight_decay = getattr(out, "weight_decay", 0.0)
    out.l2 = 0.0 if decoupled else weight_decay
    out.decay_factor = 1.0 - out.lr * weight_decay if decoupled else 1.0
    return out


def _is_scheduled(opts) -> bool:
    return any(
        isinstance(getattr(opts, f.name), AbstractSchedule) for f in attrs.fields(type(opts))
    )


def option_values(opts, state: OptimizationState, mult: Multipliers = NO_MULTIPLIERS):
    """``opts`` read at ``state`` with multipliers ``mult``, as :class:`OptionValues`.

    Shared while nothing they depend on changes: for options without schedules, the
    options' revision, the batch size and the multipliers; with schedules, the state's
    revision too. So the schedules are read, and the ranges checked, once per step.
    """
    revision = opts._revision
    cache = opts.__dict__.get("_values_cache")
    if cache is None or cache[0] != revision:
        cache = opts._values_cache = (revision, _is_scheduled(opts), [None, None, {}])
    scheduled, slot = cache[1], cache[2]
    key = (state, state._revision) if scheduled else (state.batch_size,)
    if slot[0] != key or slot[1] is not state:
        slot[0], slot[1], slot[2] = key, state, {}
    by_mult = slot[2]
    values = by_mult.get(mult)
    if values is None:
        values = by_mult[mult] = _read_options(opts, state, mult)
    return values


def momentum_value(scheduler, state: OptimizationState) -> float:
    """A momentum scheduler's value at ``state``, checked to be a number in [0, 1)."""
    value = scheduler.value(state)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"momentum_scheduler {shown(scheduler)} gave {shown(value)}; a momentum must be a "
            f"number in [0, 1)"
        )
    return float(value)


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
    v = option_values(opts, state)
    rescale, clip, wd = v.rescale, v.grad_clip, v.l2
    g = grad * rescale
    if clip > 0:
        g.clip(-clip, clip, out=g)
    if wd > 0:
        g += wd * weight
    return g


class StateArrays:
    """The flat state arrays of a weight, or of a slice of a packed buffer, by name.

    What :meth:`AbstractOptimizer.apply` works on: ``flat`` (``{name: 1-D array}``),
    ``shape`` (the weight's) and :meth:`arrays_for`.
    """

    __slots__ = ("_by_kernel", "flat", "shape")

    def __init__(self, flat: dict, shape: tuple):
        self.flat = flat
        self.shape = shape
        self._by_kernel = {}

    def __getstate__(self) -> dict:
        """Every slot's value (copies and pickles), without the cache of array tuples."""
        names = {name for cls in type(self).__mro__ for name in getattr(cls, "__slots__", ())}
        state = {name: getattr(self, name) for name in names if hasattr(self, name)}
        state["_by_kernel"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def describe(self) -> str:
        """How error messages name these arrays."""
        return "this state"

    def arrays_for(self, kernel: Kernel) -> tuple:
        """The flat state arrays ``kernel`` works on, in its order."""
        arrays = self._by_kernel.get(kernel)
        if arrays is None:
            missing = [name for name in kernel.state if name not in self.flat]
            if missing:
                raise ValueError(
                    f"{self.describe()}: the optimizer's options now call for the "
                    f"{shown(kernel.name)} kernel, which needs state arrays {missing} that this "
                    f"state (made for {tuple(self.flat)}) does not have; create new "
                    f"state (a new updater) after changing such options"
                )
            arrays = self._by_kernel[kernel] = tuple(self.flat[name] for name in kernel.state)
        return arrays

    def slice(self, lo: int, hi: int) -> StateArrays:
        """The arrays of elements ``[lo, hi)`` (a segment of a packed buffer)."""
        return StateArrays({name: a[lo:hi] for name, a in self.flat.items()}, (hi - lo,))


class AbstractOptimizer(abc.ABC):
    """Base class of all optimizers.

    An optimizer holds ``opts`` (its options, an instance of ``Options``) and
    ``state`` (the :class:`~mxopt.OptimizationState` it reads; it may be given at
    construction or assigned later, and must be set before the first update).

    Subclasses set ``Options`` (and ``about`` for the docs) and implement
    :meth:`kernel` and :meth:`kernel_scalars`; :func:`mxopt.create_state` and the
    updater do the rest.
    """

    Options: ClassVar[type]
    #: What the documentation says of it besides the docstring.
    about: ClassVar[About | None] = None
    #: True when an update needs each tensor whole (per-tensor norms: LAMB, LARS), so a
    #: packed buffer is updated segment by segment, never as one array.
    per_tensor: ClassVar[bool] = False
    #: True for optimizers that keep per-weight scalars between updates.
    has_memory: ClassVar[bool] = False
    #: The state array that holds the optimizer's own evaluation point (Schedule-Free's
    #: ``"x"``): the updater's averaging API serves it when no ``averaging=`` is given.
    evaluation_point: ClassVar[str | None] = None
    #: True when an update is one call of :meth:`kernel` (``apply`` is not overridden):
    #: the updater keeps a ready-to-run plan per weight for such optimizers.
    single_kernel: ClassVar[bool] = True
    #: A reducing kernel whose two sums over every weight of a step the update reads
    #: (Prodigy's): the engine runs it, with the scalars of :meth:`prepare` (then a
    #: mapping by name), between prepare and apply, and hands the sums to
    #: :meth:`with_step_sums`. None for the optimizers whose weights are independent.
    step_sums_kernel: ClassVar[Kernel | None] = None
    #: The state arrays that ``state_dtype`` may store in bfloat16 or 8 bits, by name: True
    #: for a signed moment (a mean), False for a non-negative one (a mean of squares).
    #: Empty for optimizers without the ``state_dtype`` option.
    moment_signs: ClassVar[dict] = {}
    _option_names: ClassVar[frozenset] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.single_kernel = cls.apply is AbstractOptimizer.apply
        options = getattr(cls, "Options", None)
        cls._option_names = frozenset(attrs.fields_dict(options) if attrs.has(options) else ())
        if "Options" in cls.__dict__ and "__signature__" not in cls.__dict__:
            # help() and inspect.signature show the real keyword options.
            keyword = inspect.Parameter.KEYWORD_ONLY
            parameters = [
                inspect.Parameter(f.name, keyword, default=f.default)
                for f in attrs.fields(cls.Options)
            ]
            parameters.append(inspect.Parameter("state", keyword, default=None))
            cls.__signature__ = inspect.Signature(parameters)

    def __setattr__(self, name, value):
        # ``optimizer.lr = x`` means the option: set it there, checked. As a plain
        # attribute it would be ignored by every update.
        if name in self._option_names:
            old = getattr(self.opts, name)
            setattr(self.opts, name, value)
            try:
                self.kernel()  # the combination is checked as the constructor checks it
            except ValueError:
                setattr(self.opts, name, old)
                raise
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Reached only when normal lookup fails: ``optimizer.lr`` reads ``opts.lr``.
        if name in type(self)._option_names and "opts" in self.__dict__:
            return getattr(self.opts, name)
        raise AttributeError(f"{shown(type(self).__name__)} object has no attribute {shown(name)}")

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
                f"got {shown(value)} of type {type(value).__name__}"
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

    def revision(self):
        """Changes whenever an option changes (keys the caches of host scalars)."""
        return self.opts._revision

    def gradient_rescale(self, state: OptimizationState) -> float:
        """``grad_scale / batch_size``: what the gradient is multiplied by before use."""
        return option_values(self.opts, state).grad_scale / state.batch_size

    def compressed_state(self) -> tuple[str, dict]:
        """``(state_dtype, moment_signs)``: how the moments are stored (see
        :mod:`mxopt.training.precision`)."""
        return getattr(self.opts, "state_dtype", "float32"), self.moment_signs

    def precision(self) -> tuple[bool, bool, int]:
        """``(multi_precision, stochastic_rounding, rounding_seed)``: how float16 and
        bfloat16 weights are updated (see :mod:`mxopt.training.precision`)."""
        opts = self.opts
        return (
            getattr(opts, "multi_precision", False),
            getattr(opts, "stochastic_rounding", False),
            getattr(opts, "rounding_seed", 0),
        )

    def lr_value(self, state: OptimizationState) -> float:
        """The learning rate at ``state``: the scheduler's if one is set, else ``lr``."""
        return option_values(self.opts, state).lr

    def values(self, state: OptimizationState, mult: Multipliers = NO_MULTIPLIERS):
        """The options read at ``state`` (:func:`option_values`); wrappers read their
        inner optimizer's."""
        return option_values(self.opts, state, mult)

    # -- the protocol ------------------------------------------------------------------

    @abc.abstractmethod
    def kernel(self) -> Kernel:
        """The :class:`~mxopt.kernels.kernel.Kernel` this optimizer's options call for
        (the first one, for multi-pass optimizers)."""

    @abc.abstractmethod
    def kernel_scalars(self, v: OptionValues, step: int, memory: dict) -> Mapping:
        """The kernel's scalars by name, from the options read at the state (``v``), the
        weight's update count (``step``, 1 at its first update) and its per-weight
        scalars (``memory``, which must not be modified)."""

    def prepare(self, v: OptionValues, step: int, memory: dict):
        """Everything :meth:`apply` needs from the host, computed before any write.

        The default packs :meth:`kernel_scalars` in the kernel's order.
        """
        return self.kernel().pack(self.kernel_scalars(v, step, memory))

    def step_scalars(self) -> tuple[str, ...] | None:
        """The names of the kernel scalars that change with the update count, when
        :meth:`prepare` is ``kernel().pack(kernel_scalars(...))`` under the current options
        and the others depend only on the options read at the state: a new step of the same
        options, state and multipliers then recomputes only these
        (:meth:`step_formula` of :meth:`step_inputs`) and keeps the rest. ``None`` (the
        default): a new step recomputes everything. An optimizer that answers must give
        :meth:`prepare`'s exact bits (tests/test_step_scalars.py checks every one that
        does)."""
        return None

    def step_inputs(self, v: OptionValues) -> tuple[float, ...]:
        """The floats :meth:`step_formula` computes the step scalars from, read from the
        options at the state (``v``); flags as 0.0 or 1.0."""
        raise NotImplementedError(f"{type(self).__name__} names no step scalars")

    @staticmethod
    def step_formula(inputs: tuple, step: int) -> tuple:
        """The values of the scalars :meth:`step_scalars` names, in its order, at ``step``,
        from :meth:`step_inputs`. Plain float arithmetic and :mod:`math` (``x ** float(n)``
        for powers): a direct call of a small weight compiles it and computes them
        itself, with the same bits (tests/test_step_scalars.py)."""
        raise NotImplementedError

    def step_kernel_scalars(self, v: OptionValues, step: int) -> tuple:
        """:meth:`step_formula` at ``step`` for the options read at the state."""
        return self.step_formula(self.step_inputs(v), step)

    def with_step_sums(self, prepared, sums: tuple) -> tuple:
        """``(what apply reads, the next per-weight scalars)`` of a weight prepared as
        ``prepared``, once the step's ``sums`` (of :attr:`step_sums_kernel`) are known."""
        raise NotImplementedError

    def next_memory(self, v: OptionValues, step: int, memory: dict) -> dict:
        """The per-weight scalars after a successful step (e.g. Nadam's running momentum
        product). Only called when :attr:`has_memory`."""
        return memory

    def state_spec(self, shape: tuple) -> dict:
        """The state arrays a weight of ``shape`` needs: ``{name: initial value}``.

        The value is a float fill, :data:`WEIGHT_COPY` for a copy of the
        weight, or ``(shape, fill)`` for an array that is not shaped like the
        weight (Adafactor's factors). Defaults to the kernel's state, shaped
        like the weight and filled by :meth:`initial_state_value`.
        """
        return {name: self.initial_state_value(name) for name in self.kernel().state}

    def state_spec_for(self, index, shape: tuple) -> dict:
        """The state arrays of the weight at ``index``, of ``shape``: what the step engine
        creates, checks and loads (:func:`~mxopt.create_state`, buffers, checkpoints).

        :meth:`state_spec` unless the state depends on which weight it is (Muon hands the
        indices its options name to another optimizer); may raise a ``ValueError`` naming
        ``index`` for a weight the optimizer cannot update.
        """
        return self.state_spec(shape)

    def initial_state_value(self, name: str) -> float:
        """The value a state array starts from (0 unless an optimizer says otherwise)."""
        return 0.0

    def updates_rows(self) -> bool:
        """Whether a :class:`~mxopt.RowSparse` gradient updates only its rows (a lazy
        update: the rest of the weight and of its state arrays is not touched). False by
        default: the gradient is then scattered into a dense one. Optimizers with a
        ``lazy_update`` option return it; only single-kernel elementwise optimizers can."""
        return False

    def apply(self, backend, w, g, arrays: StateArrays, prepared, check: bool) -> int:
        """Run the update's kernel(s) over the flat arrays ``w``, ``g``.

        ``backend`` is :mod:`mxopt.kernels.cpu` or :mod:`mxopt.kernels.cuda`, ``prepared``
        what :meth:`prepare` returned. With ``check``, the first kernel counts the
        non-finite gradient values and, if there are any, returns their number
        without writing anything. Returns 0 on success.
        """
        kernel = self.kernel()
        return backend.run(kernel, w, g, arrays.arrays_for(kernel), prepared, check)

    def apply_segments(self, backend, w, g, arrays: StateArrays, offsets, prepared,
                       check: bool) -> int:  # fmt: skip
        """:meth:`apply` over a packed buffer whose weights are ``w[offsets[k]:offsets[k+1]]``.

        This default checks the whole gradient first (with ``check``), then applies each
        segment in turn; LAMB and LARS override it with segmented kernels.
        """
        if check:
            bad = backend.run(GRAD_SQUARES_KERNEL, g, g, (), (), False)[2]
            if bad:
                return int(bad)
        for k in range(len(offsets) - 1):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            self.apply(backend, w[lo:hi], g[lo:hi], arrays.slice(lo, hi), prepared, False)
        return 0

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{a.name}={getattr(self.opts, a.name)!r}" for a in attrs.fields(type(self.opts))
        )
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.opts == self.opts

    __hash__ = None  # mutable
