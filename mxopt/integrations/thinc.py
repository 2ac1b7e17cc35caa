"""The Thinc/spaCy adapter; documented at its short path, :mod:`mxopt.thinc`."""

import math
import numbers
import sys
import warnings
from typing import Any, Literal

import attrs

from mxopt.core.checks import shown
from mxopt.core.schedule import AbstractLearningRateScheduler, AbstractSchedule
from mxopt.core.state import OptimizationState
from mxopt.kernels import backends
from mxopt.optimizers import ADAM, SGD, RAdam
from mxopt.optimizers.averaging import EMA
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.persist.config import from_config
from mxopt.persist.registry import KIND_KEYS, registered
from mxopt.schedules.decay import Plateau
from mxopt.training.updater import Updater

try:  # an instance of Thinc's Optimizer passes spaCy's config validation
    import thinc.schedules as _thinc_schedules
    from thinc.optimizers import Optimizer as _ThincOptimizerBase
except ImportError:  # the adapter works (and imports) without Thinc
    _ThincOptimizerBase, _thinc_schedules = object, None
_ThincScheduleType = getattr(_thinc_schedules, "Schedule", AbstractSchedule)  # Thinc 9's only

__all__ = ["Adam", "NoScoreWarning", "SCORE_WARNING_STEPS", "ThincOptimizer", "ThincSchedule"]
__all__ += ["mxopt_optimizer", "register_in_thinc"]

#: Steps without a score after which a score-based schedule warns (:class:`NoScoreWarning`):
#: five evaluations at spaCy's default ``eval_frequency`` (200), so a loop that evaluates
#: rarely but does report its scores (``optimizer.last_score = score``) is not warned.
SCORE_WARNING_STEPS = 1000


class NoScoreWarning(UserWarning):
    """A score-based schedule is in use but ``optimizer.last_score`` was never set."""


class _Values:
    """Annotation for Thinc 8's form of a schedule, an iterator of values (not a string)."""

    @classmethod
    def __get_validators__(cls):  # pydantic v1 (what confection validates with)
        yield cls.validate

    @classmethod
    def validate(cls, value):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__next__"):
            raise TypeError("not a number, a list of numbers, a generator or a schedule")
        return value


#: A hyperparameter of the factories, as confection validates it (Thinc's forms and mxopt's).
ScheduleT = float | list[float] | _Values | _ThincScheduleType | AbstractSchedule


class ThincSchedule(AbstractLearningRateScheduler):
    """A Thinc schedule, or a list or generator of values, as an mxopt schedule.

    Read at Thinc's step ``curr_iter - 1``: a Thinc ``Schedule`` (Thinc 9) is
    called as ``schedule(step, key=None, last_score=...)``; a list or generator
    (Thinc 8) gives its ``step``-th value, and its last one once exhausted.
    Unit: iteration. Value at the first update: the schedule's value at step 0.
    It is not a config object (it wraps Python code). ``last_score`` is a function
    returning Thinc's ``(step, score)``; without it (a Thinc schedule in a nested
    config block) the :class:`ThincOptimizer` it ends up in binds its own.
    """

    unit = "iteration"

    def __init__(self, schedule, last_score=None, name: str = "learn_rate"):
        self.name = name
        self._last_score = last_score
        self.bound = last_score is not None  # reads an adapter's last_score
        if _is_thinc_schedule(schedule):
            self._call = schedule
            self._values = None
        else:
            try:
                self._source = iter(schedule)
                first = next(self._source)
            except (TypeError, StopIteration) as error:
                raise ValueError(
                    f"Invalid schedule for {shown(name)} ({type(schedule).__name__}): {error}"
                ) from None
            self._call = None
            self._values = [first]
            self._exhausted = False

    def bind(self, last_score) -> None:
        """Read ``last_score()`` (an adapter's ``(step, score)``) from now on."""
        self._last_score = last_score
        self.bound = True

    @property
    def reads_scores(self) -> bool:
        """Whether it is (or contains) Thinc's ``plateau`` schedule."""
        return _thinc_schedule_reads_scores(self._call) if self._call is not None else False

    def value(self, state: OptimizationState):
        step = max(state.curr_iter - 1, 0)
        if self._call is not None:
            score = self._last_score() if self.bound else None
            return self._call(step, key=None, last_score=score)
        values = self._values
        while len(values) <= step and not self._exhausted:
            try:
                values.append(next(self._source))
            except StopIteration:
                self._exhausted = True
        return values[min(step, len(values) - 1)]

    def __repr__(self) -> str:
        inner = self._call if self._call is not None else f"values[:{len(self._values)}]"
        return f"ThincSchedule({inner!r})"


def _is_thinc_schedule(value) -> bool:
    schedules = sys.modules.get("thinc.schedules")
    return schedules is not None and isinstance(value, getattr(schedules, "Schedule", ()))


def _thinc_schedule_reads_scores(schedule, depth: int = 0) -> bool:
    if getattr(schedule, "name", None) == "plateau":
        return True
    inner = getattr(schedule, "attrs", None) if depth < 8 else None
    values = inner.values() if isinstance(inner, dict) else ()
    return any(_is_thinc_schedule(v) and _thinc_schedule_reads_scores(v, depth + 1) for v in values)


def _schedules_in(value, depth: int = 0):
    """The schedules in ``value`` (an optimizer, its options, a schedule...), recursively."""
    if depth > 8:
        return
    if isinstance(value, AbstractSchedule):
        yield value
    if isinstance(value, AbstractOptimizer):
        yield from _schedules_in(value.opts, depth + 1)
        inner = getattr(value, "inner", None)
        if isinstance(inner, AbstractOptimizer):
            yield from _schedules_in(inner, depth + 1)
    elif attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            yield from _schedules_in(getattr(value, field.name, None), depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _schedules_in(item, depth + 1)


class _Rate(float):
    """The current value of a hyperparameter; Thinc 9 style ``rate(step)`` also works."""

    def __new__(cls, value, at=None):
        rate = super().__new__(cls, value)
        rate._at = at
        return rate

    def __call__(self, step=None, **kwargs):
        if step is None or self._at is None:
            return float(self)
        return float(self._at(step))


def _option_property(thinc_name: str, doc: str) -> property:
    return property(
        lambda self: self._get_option(thinc_name),
        lambda self, value: self._set_option(thinc_name, value),
        doc=doc,
    )


class ThincOptimizer(_ThincOptimizerBase):
    """Thinc's ``Optimizer`` interface (``optimizer(key, weights, gradient, lr_scale=...)``,
    ``step_schedules()``, ``learn_rate``, ``last_score``, ``averages``...) over an mxopt
    optimizer, whose fused kernels do the updates.

    Args:
        optimizer: an mxopt optimizer (``mxopt.AdamW(...)``) or its config dict.
            The adapter sets its ``state`` to the adapter's own
            :class:`~mxopt.OptimizationState` (``batch_size=1``; see the module
            docstring for the counting).
        use_averages: keep an EMA of every parameter with Thinc's rule
            (:class:`mxopt.EMA`), for ``optimizer.averages`` and spaCy's
            ``nlp.use_params(optimizer.averages)``.
        averaging: instead of ``use_averages``, an explicit :class:`mxopt.EMA` or
            :class:`mxopt.Polyak`.
        grad_clip: Thinc's per-parameter gradient-norm clipping (0 = off); a
            number or a schedule.
        zero_grad: zero the gradient in place after the update, as Thinc does.
        nonfinite: ``"raise"``, ``"skip"`` or ``"apply"`` (see :class:`mxopt.Updater`).
        steps_per_epoch: advance ``curr_epoch`` every that many steps, for
            epoch-based mxopt schedules (default: no epochs).

    Hyperparameters (``learn_rate``, ``L2``, ``b1``, ``b2``, ``eps``, ``grad_clip``)
    accept numbers, mxopt schedules, Thinc schedules and lists or generators
    of values (Thinc's forms); reading them gives the current value. ``L2``,
    ``L2_is_weight_decay``, ``b1``, ``b2`` and ``eps`` map to the mxopt options
    ``weight_decay``, ``decoupled_weight_decay``, ``beta1``, ``beta2`` and
    ``epsilon`` where the optimizer has them.
    """

    _OPTION_NAMES = {"L2": "weight_decay", "b1": "beta1", "b2": "beta2", "eps": "epsilon"}

    def __init__(
        self,
        optimizer,
        *,
        use_averages: bool = False,
        averaging=None,
        grad_clip=0.0,
        zero_grad: bool = True,
        nonfinite: str = "raise",
        steps_per_epoch=None,
    ):
        if isinstance(optimizer, ThincOptimizer):
            optimizer = optimizer.optimizer
        elif isinstance(optimizer, dict):
            optimizer = from_config(optimizer, "optimizer")
        if not isinstance(optimizer, AbstractOptimizer):
            raise TypeError(
                f"ThincOptimizer: optimizer must be an mxopt optimizer (e.g. mxopt.AdamW()) "
                f"or its config dict, got {shown(optimizer)}"
            )
        if not isinstance(use_averages, bool):
            raise TypeError(
                f"ThincOptimizer: use_averages must be True or False, got {shown(use_averages)}"
            )
        if averaging is None and use_averages:
            averaging = EMA()  # decay 0.9999 with Thinc's warmup, as thinc's update_averages
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, numbers.Integral)
            or steps_per_epoch < 1
        ):
            raise ValueError(
                f"ThincOptimizer: steps_per_epoch must be None or an integer >= 1, "
                f"got {shown(steps_per_epoch)}"
            )
        if not isinstance(zero_grad, bool):
            raise TypeError(
                f"ThincOptimizer: zero_grad must be True or False, got {shown(zero_grad)}"
            )
        self._state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
        optimizer.state = self._state
        self._optimizer = optimizer
        self._updater = Updater(optimizer, averaging=averaging, nonfinite=nonfinite)
        self._averaging_rule = averaging  # kept for ``averages = {}`` after ``averages = None``
        self._zero_grad = zero_grad
        self._steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self._last_score_value = None
        self._score_warned = False
        self.grad_clip = grad_clip
        for schedule in _schedules_in(optimizer):  # Thinc schedules from nested config blocks
            if isinstance(schedule, ThincSchedule) and not schedule.bound:
                schedule.bind(self._read_last_score)

    # -- what it wraps -------------------------------------------------------------------

    @property
    def optimizer(self) -> AbstractOptimizer:
        """The mxopt optimizer doing the updates."""
        return self._optimizer

    @property
    def updater(self) -> Updater:
        """The :class:`mxopt.Updater` holding the per-parameter state, keyed by Thinc's keys."""
        return self._updater

    @property
    def state(self) -> OptimizationState:
        """The :class:`mxopt.OptimizationState` the optimizer and its schedules read."""
        return self._state

    # -- Thinc's interface ---------------------------------------------------------------

    def __call__(self, key, weights, gradient, *, lr_scale: float = 1.0):
        """Update ``weights`` in place from ``gradient`` (then zeroed in place); returns
        ``(weights, gradient)``, as Thinc's ``Optimizer.__call__``."""
        if gradient.size == 0:
            return weights, gradient
        multiplier = 1.0
        clip = self._grad_clip
        if clip.__class__ is not float:
            clip = self._read(clip, "grad_clip")
        if clip > 0.0:
            flat = gradient.reshape(-1)
            norm = math.sqrt(float(flat.dot(flat)))
            if norm >= clip and math.isfinite(norm):
                multiplier = clip / norm
        if multiplier == 1.0 and lr_scale == 1.0:
            self._updater(key, gradient, weights)
        else:
            self._updater.update_one(key, gradient, weights, multiplier=multiplier,
                                     lr_scale=lr_scale)  # fmt: skip
        if self._zero_grad:
            gradient.fill(0)
        return weights, gradient

    def step_schedules(self) -> None:
        """End a Thinc step: ``state.begin_batch()`` (and ``begin_epoch()`` every
        ``steps_per_epoch`` steps)."""
        state = self._state
        if self._steps_per_epoch is not None and state.curr_iter % self._steps_per_epoch == 0:
            state.begin_epoch()
        state.begin_batch()
        step = state.curr_iter - 1
        if step % SCORE_WARNING_STEPS == 0 and not (self._score_warned or state.scores):
            _warn_no_score(self, step)

    @property
    def step(self) -> int:
        """Thinc's step: the number of ``step_schedules()`` calls so far (``curr_iter - 1``)."""
        return self._state.curr_iter - 1

    @property
    def last_score(self):
        """``(step, score)`` of the last evaluation, or ``None``; setting it to a score
        also records it in the state (``state.record_score``) for
        :class:`mxopt.LearningRate.Plateau`."""
        return self._last_score_value

    @last_score.setter
    def last_score(self, score) -> None:
        self._state.record_score(score)
        self._last_score_value = (self.step, score)

    def _read_last_score(self):
        return self._last_score_value

    @property
    def learn_rate(self) -> float:
        """The learning rate now (the mxopt schedule's value, or ``lr``); call it with a
        step, ``optimizer.learn_rate(step)``, for the value at another step (Thinc 9).
        Assign a number or a schedule to change it."""
        return _Rate(self._optimizer.lr_value(self._state), self._learn_rate_at)

    @learn_rate.setter
    def learn_rate(self, value) -> None:
        value = self._hyperparameter(value, "learn_rate")
        opts = self._opts_with("lr_scheduler", "learn_rate")
        if isinstance(value, AbstractSchedule):
            if not isinstance(value, AbstractLearningRateScheduler):
                raise TypeError(
                    f"learn_rate: expected a learning-rate schedule, got {shown(value)}"
                )
            opts.lr_scheduler = value
        else:
            opts.lr = value
            opts.lr_scheduler = None

    def _learn_rate_at(self, step) -> float:
        at = attrs.evolve(self._state, curr_iter=int(step) + 1, scores=list(self._state.scores))
        return self._optimizer.lr_value(at)

    @property
    def grad_clip(self) -> float:
        """Thinc's per-parameter gradient-norm clipping threshold now (0: off)."""
        return _Rate(self._read(self._grad_clip, "grad_clip"))

    @grad_clip.setter
    def grad_clip(self, value) -> None:
        value = self._hyperparameter(value, "grad_clip")
        if not isinstance(value, AbstractSchedule) and not value >= 0:
            raise ValueError(f"grad_clip must be a number >= 0 or a schedule, got {shown(value)}")
        self._grad_clip = value

    def _opts_with(self, name: str, thinc_name: str):
        """The options record holding option ``name`` (a wrapper's, e.g. Lookahead's,
        inner optimizer's if the wrapper has none)."""
        optimizer = self._optimizer
        while True:
            opts = optimizer.opts
            if name in attrs.fields_dict(type(opts)):
                return opts
            inner = getattr(optimizer, "inner", None)
            if not isinstance(inner, AbstractOptimizer):
                raise AttributeError(
                    f"{thinc_name}: {type(self._optimizer).__name__} has no {shown(name)} option"
                )
            optimizer = inner

    def _option(self, thinc_name: str):
        name = self._OPTION_NAMES[thinc_name]
        return name, self._opts_with(name, thinc_name)

    def _get_option(self, thinc_name: str) -> float:
        name, opts = self._option(thinc_name)
        return _Rate(self._read(getattr(opts, name), thinc_name))

    def _set_option(self, thinc_name: str, value) -> None:
        name, opts = self._option(thinc_name)
        setattr(opts, name, self._hyperparameter(value, thinc_name))

    L2 = _option_property("L2", "The L2 / weight-decay coefficient (mxopt's ``weight_decay``).")
    b1 = _option_property("b1", "First-moment decay (mxopt's ``beta1``).")
    b2 = _option_property("b2", "Second-moment decay (mxopt's ``beta2``).")
    eps = _option_property("eps", "Epsilon (mxopt's ``epsilon``).")

    @property
    def L2_is_weight_decay(self) -> bool:
        """Whether ``L2`` decays the weights directly (AdamW style, mxopt's
        ``decoupled_weight_decay``) rather than adding ``L2 * W`` to the gradient."""
        try:
            opts = self._opts_with("decoupled_weight_decay", "L2_is_weight_decay")
        except AttributeError:
            return False
        return opts.decoupled_weight_decay

    @L2_is_weight_decay.setter
    def L2_is_weight_decay(self, value: bool) -> None:
        opts = self._opts_with("decoupled_weight_decay", "L2_is_weight_decay")
        opts.decoupled_weight_decay = value

    @property
    def use_radam(self) -> bool:
        """Whether the optimizer is RAdam (Thinc's flag, read-only)."""
        return isinstance(self._optimizer, RAdam)

    def __getstate__(self) -> dict:
        # Only this adapter's own attributes: Thinc's base class declares slots (averages,
        # ...) that are read-only properties here. The updater copies itself (its lock and
        # compiled caches are made again).
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def use_averages(self) -> bool:
        """Whether moving averages of the parameters are kept."""
        return self._updater.averaging is not None

    @property
    def averages(self):
        """``{key: average}`` of every parameter updated so far, or ``None`` without
        averaging (as Thinc); for ``model.use_params(optimizer.averages)``.

        Assigning ``None`` stops averaging and a dict starts it again (Thinc's semantics,
        with the adapter's rule, default :class:`mxopt.EMA`), copying each given array
        into its key's average; other keys keep theirs (Thinc restarts them at zero).
        """
        if self._updater.averaging is None:
            return None
        return self._updater.averages

    @averages.setter
    def averages(self, value) -> None:
        _assign_averages(self, value)

    @property
    def nr_update(self) -> dict:
        """``{key: number of updates}`` (Thinc's ``nr_update``)."""
        return {key: state.step for key, state in self._updater.states.items()}

    def to_gpu(self, device=None) -> None:
        """Move every state array (moments, averages) to CuPy on ``device`` (default:
        the current CUDA device), for a model whose parameters moved there."""
        import cupy

        device_id = cupy.cuda.Device(device).id if device is not None else cupy.cuda.Device().id
        self._move(backends.CUPY, device_id)

    def to_cpu(self) -> None:
        """Move every state array to NumPy (host memory)."""
        self._move(backends.NUMPY, None)

    def _move(self, backend: str, device) -> None:
        for state in self._updater.states.values():
            state.move_to(backend, device)
        self._updater._groups = {}

    # -- helpers -------------------------------------------------------------------------

    def _hyperparameter(self, value, name: str):
        """A number, an mxopt schedule, or Thinc's forms of a schedule, for ``name``."""
        if isinstance(value, bool):
            raise ValueError(f"Invalid value for {shown(name)}: {shown(value)}")
        if isinstance(value, numbers.Real):
            return float(value)
        if isinstance(value, AbstractSchedule):
            return value
        if isinstance(value, dict):
            return from_config(value, name)
        if (
            _is_thinc_schedule(value)
            or isinstance(value, (list, tuple))
            or hasattr(value, "__next__")
        ):
            return ThincSchedule(value, self._read_last_score, name)
        raise ValueError(
            f"Invalid schedule for {shown(name)}: {shown(value)} ({type(value).__name__}); "
            f"expected a number, an mxopt schedule, a Thinc schedule, or a list or generator "
            f"of values"
        )

    def _read(self, value, name: str) -> float:
        if isinstance(value, AbstractSchedule):
            return float(value.value(self._state))
        return value

    def __repr__(self) -> str:
        averaging = self._updater.averaging
        return (
            f"ThincOptimizer({self._optimizer!r}, averaging={averaging!r}, "
            f"grad_clip={self._grad_clip!r}, step={self.step})"
        )


def _assign_averages(adapter: ThincOptimizer, value) -> None:
    """``adapter.averages = value`` (see :attr:`ThincOptimizer.averages`)."""
    updater = adapter.updater
    if value is None:
        if updater.averaging is not None:
            adapter._averaging_rule = updater.averaging
            updater.averaging = None
        return
    if not isinstance(value, dict):
        raise TypeError(f"averages must be None or a dict of arrays, got {shown(value)}")
    unknown = [key for key in value if key not in updater.states]
    if unknown:
        raise KeyError(f"averages: no parameter with key {shown(unknown[0])} was updated yet")
    if updater.averaging is None:
        without = [key for key, s in updater.states.items() if "average" not in s.arrays]
        if without:  # their states have no average array
            raise ValueError(
                f"averages: cannot start averaging after {len(without)} parameters were "
                f"updated without it; create the optimizer with use_averages=True"
            )
        updater.averaging = adapter._averaging_rule or EMA()
    for key, average in value.items():
        target = updater.states[key].arrays["average"]
        target[...] = average.reshape(target.shape)


def _warn_no_score(adapter: ThincOptimizer, step: int) -> None:
    """Warn (once) when a score-based schedule is in use and no score came in ``step`` steps."""
    schedules = [*_schedules_in(adapter.optimizer), *_schedules_in(adapter._grad_clip)]
    reading = [s for s in schedules if isinstance(s, Plateau) or getattr(s, "reads_scores", 0)]
    if not reading:
        return
    adapter._score_warned = True
    warnings.warn(
        NoScoreWarning(
            f"{type(reading[0]).__name__} reads scores, but no score was recorded in {step} "
            f"steps, so it keeps its rate: set optimizer.last_score = score after each "
            f"evaluation (spaCy 3.8's training loop does not), or use a schedule that does "
            f"not need scores"
        ),
        stacklevel=3,
    )


def Adam(
    learn_rate: ScheduleT = 0.001,
    *,
    L2: ScheduleT = 0.0,
    beta1: ScheduleT = 0.9,
    beta2: ScheduleT = 0.999,
    eps: ScheduleT = 1e-08,
    grad_clip: ScheduleT = 1.0,
    L2_is_weight_decay: bool = True,
    use_averages: bool = True,
) -> ThincOptimizer:
    """Thinc's ``Adam.v1``, same arguments and defaults, on mxopt's fused ADAM kernel.

    Thinc's Adam is mxopt's :class:`~mxopt.ADAM` with MXNet's epsilon placement
    (``epsilon_hat=True``: epsilon added to the root of the uncorrected second
    moment, both bias corrections folded into the step size), no coupled weight
    decay of its own, ``L2`` as ``weight_decay`` (decoupled when
    ``L2_is_weight_decay``), Thinc's per-parameter gradient-norm clipping and
    its EMA of the weights. Registered as ``"mxopt.Adam.v1"`` in Thinc's
    optimizers. Every hyperparameter takes Thinc's schedules as well as mxopt's.
    """
    adapter = ThincOptimizer(
        ADAM(epsilon_hat=True, weight_decay=0.0, decoupled_weight_decay=L2_is_weight_decay),
        use_averages=use_averages,
        grad_clip=grad_clip,
    )
    _set_hyperparameters(adapter, learn_rate=learn_rate, L2=L2, b1=beta1, b2=beta2, eps=eps)
    return adapter


def _set_hyperparameters(adapter: ThincOptimizer, **values) -> None:
    """Assign Thinc's hyperparameters given (not None) through the adapter's setters."""
    for name in [name for name, value in values.items() if value is not None]:
        setattr(adapter, name, values[name])


def mxopt_optimizer(
    optimizer: AbstractOptimizer | dict[str, Any] | None = None,
    *,
    learn_rate: ScheduleT | None = None,
    L2: ScheduleT | None = None,
    beta1: ScheduleT | None = None,
    beta2: ScheduleT | None = None,
    eps: ScheduleT | None = None,
    grad_clip: ScheduleT | None = None,
    use_averages: bool | None = None,
    use_radam: bool | None = None,
    L2_is_weight_decay: bool | None = None,
    nonfinite: Literal["raise", "skip", "apply"] = "raise",
    steps_per_epoch: int | None = None,
) -> ThincOptimizer:
    """Any mxopt optimizer as a Thinc optimizer (``"mxopt.Optimizer.v1"``), or without
    one what ``thinc.api.Optimizer`` builds from the same arguments.

    ``optimizer``: an mxopt optimizer (in a config, a nested block such as ``@optimizers =
    "mxopt.AdamW.v1"``) or its config dict. The defaults are then mxopt's (no averaging,
    no clipping), and the Thinc arguments given override its ``lr`` or ``lr_scheduler``,
    ``weight_decay``, ``beta1``, ``beta2``, ``epsilon`` and ``decoupled_weight_decay``.
    Without it: Thinc's defaults (``learn_rate=0.001``, ``grad_clip=1.0``,
    ``use_averages=True``) and :class:`~mxopt.RAdam` for ``use_radam``, plain
    :class:`~mxopt.SGD` for ``beta1 == beta2 == 0`` (``L2`` coupled), Thinc's Adam
    (:func:`Adam`) otherwise.
    """
    thinc_shaped = optimizer is None
    if thinc_shaped:
        decoupled = True if L2_is_weight_decay is None else L2_is_weight_decay
        if use_radam:
            optimizer = RAdam(weight_decay=0.0, decoupled_weight_decay=decoupled)
        elif beta1 == 0 and beta2 == 0:  # Thinc's SGD.v1; mxopt's SGD has no betas or eps
            optimizer, beta1, beta2, eps = SGD(momentum=0.0, weight_decay=0.0), None, None, None
        else:
            optimizer = ADAM(epsilon_hat=True, weight_decay=0.0, decoupled_weight_decay=decoupled)
        learn_rate, L2_is_weight_decay = 0.001 if learn_rate is None else learn_rate, None
    adapter = ThincOptimizer(
        optimizer,
        use_averages=thinc_shaped if use_averages is None else use_averages,
        grad_clip=(1.0 if thinc_shaped else 0.0) if grad_clip is None else grad_clip,
        nonfinite=nonfinite,
        steps_per_epoch=steps_per_epoch,
    )
    if use_radam is not None and use_radam != isinstance(adapter.optimizer, RAdam):
        raise ValueError(
            f"use_radam={use_radam} but the optimizer is {type(adapter.optimizer).__name__}: "
            f'name mxopt\'s RAdam in the optimizer block (@optimizers = "mxopt.RAdam.v1"), '
            f"or leave out either the optimizer block or use_radam"
        )
    if L2_is_weight_decay is not None:
        adapter.L2_is_weight_decay = L2_is_weight_decay
    _set_hyperparameters(adapter, learn_rate=learn_rate, L2=L2, b1=beta1, b2=beta2, eps=eps)
    return adapter


# -- Thinc's registries ------------------------------------------------------------------


def _native_factory(kind: str, name: str, target):
    """A function building mxopt's ``name`` from keyword options, for Thinc's registry."""
    import inspect

    key = KIND_KEYS[kind]

    def build(**options):
        for option, value in options.items():  # a nested Thinc schedule block, e.g. warmup_linear
            if _is_thinc_schedule(value) or hasattr(value, "__next__"):
                options[option] = ThincSchedule(value, name=option)
        return from_config({key: name, **options}, name)

    parameters = []
    for parameter in inspect.signature(target).parameters.values():
        if parameter.name == "state" or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        default = parameter.default
        if default is attrs.NOTHING:
            default = inspect.Parameter.empty
        elif isinstance(default, attrs.Factory):
            default = None if default.takes_self else default.factory()
        parameters.append(inspect.Parameter(parameter.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=default))  # fmt: skip
    build.__signature__ = inspect.Signature(parameters)
    build.__name__ = build.__qualname__ = name.replace(".", "_")
    build.__doc__ = f"mxopt's {name} (builds the mxopt object; see mxopt.thinc)."
    return build


def register_in_thinc() -> bool:
    """Put ``mxopt.Adam.v1``, ``mxopt.Optimizer.v1`` and every mxopt optimizer and schedule
    name in Thinc's registries (done on import; returns False without Thinc)."""
    try:
        from thinc.config import registry
    except ImportError:
        return False
    registry.optimizers.register("mxopt.Adam.v1", func=Adam)
    registry.optimizers.register("mxopt.Optimizer.v1", func=mxopt_optimizer)
    for kind in ("optimizers", "schedules"):
        target_registry = getattr(registry, kind)
        for name, target in registered()[kind].items():
            target_registry.register(name, func=_native_factory(kind, name, target))
    return True


register_in_thinc()
