"""The training progress that optimizers and schedulers read.

An :class:`OptimizationState` is the one piece of mutable training progress in
mxopt. Only the training loop advances it; optimizers, updaters and schedulers
only read it. The counting rules are those of MXNet.jl:

* ``curr_epoch`` is 0 before training, 1 during the first pass over the data,
  2 during the second, and so on.
* ``curr_batch`` is 0 at the start of every epoch and 1 during its first
  mini-batch.
* ``curr_iter`` counts mini-batches since the start of training and never
  resets; it is 1 during the first mini-batch.

A loop calls :meth:`OptimizationState.begin_epoch` at the start of each epoch
and :meth:`OptimizationState.begin_batch` *before* the updates of each batch, so
the very first update sees ``curr_epoch == 1``, ``curr_batch == 1`` and
``curr_iter == 1``.

The state also keeps the history of evaluation scores the loop reports with
:meth:`OptimizationState.record_score` (``scores``), which schedules such as
:class:`mxopt.LearningRate.Plateau` read. Because the history lives in the state,
those schedules stay pure functions of it, and saving and restoring the state
restores them.
"""

from __future__ import annotations

import numbers
import sys
import warnings

import attrs

from mxopt.core.checks import check_integer, shown, to_int

__all__ = ["OptimizationState", "OptimizerSteps", "StateNotAdvancedWarning", "warn_if_not_advanced"]


class StateNotAdvancedWarning(UserWarning):
    """An update read an :class:`OptimizationState` that was never advanced."""


def warn_if_not_advanced(state: OptimizationState) -> None:
    """Warn, once per state, when updates read a state still at ``curr_iter == 0``: the
    loop never called ``begin_batch()``, so every schedule gives its value before training
    and step-dependent options never move, silently."""
    if state.curr_iter == 0 and not state.__dict__.get("_warned_not_advanced"):
        object.__setattr__(state, "_warned_not_advanced", True)  # no revision bump
        warnings.warn(
            "an update read an OptimizationState with curr_iter == 0: call "
            "state.begin_epoch() at the start of each epoch and state.begin_batch() before "
            "each mini-batch's updates, or every schedule stays at its value before "
            "training (warned once per state)",
            StateNotAdvancedWarning,
            stacklevel=_outside_mxopt(),
        )


def _outside_mxopt() -> int:
    """The stacklevel of the first caller outside mxopt (where the warning points)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("mxopt."):
        frame, level = frame.f_back, level + 1
    return level


def _int_at_least(low: int):
    def check(instance, attribute, value):
        check_integer("OptimizationState", attribute.name, value, low)

    return check


def _score(value, where: str) -> float:
    """A score as ``float``: any real number (NaN and infinities included), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"OptimizationState: {where} must be a real number, "
            f"got {shown(value)} of type {type(value).__name__}"
        )
    return float(value)


def _as_scores(value):
    """Accept any iterable of real numbers as the score history (a new list of floats)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"OptimizationState: scores must be a list of numbers, "
            f"got {shown(value)} of type {type(value).__name__}"
        )
    return [_score(v, "every score") for v in value]


def _count_revision(instance, attribute, value):
    # Every change bumps ``_revision``, which keys the optimizers' caches of host scalars.
    object.__setattr__(instance, "_revision", getattr(instance, "_revision", 0) + 1)
    return value


@attrs.define(
    slots=False,  # room for the _revision counter
    on_setattr=[attrs.setters.convert, attrs.setters.validate, _count_revision],
)
class OptimizationState:
    """Counters of training progress, read by optimizers and schedulers.

    Args:
        batch_size: mini-batch size (>= 1). ``normalized_gradient`` divides the
            gradient by it, because the gradient handed to an update is the sum
            over the mini-batch.
        curr_epoch: current epoch, 0 before training, 1 during the first pass.
        curr_batch: mini-batch within the current epoch, 0 at its start.
        curr_iter: mini-batches since the start of training, never reset.
        scores: evaluation scores reported so far with :meth:`record_score`,
            oldest first (read by :class:`mxopt.LearningRate.Plateau`).

    Example:
        >>> state = OptimizationState(batch_size=32)
        >>> state.begin_epoch(); state.begin_batch()
        >>> (state.curr_epoch, state.curr_batch, state.curr_iter)
        (1, 1, 1)
    """

    batch_size: int = attrs.field(converter=to_int, validator=_int_at_least(1))
    curr_epoch: int = attrs.field(default=0, converter=to_int, validator=_int_at_least(0))
    curr_batch: int = attrs.field(default=0, converter=to_int, validator=_int_at_least(0))
    curr_iter: int = attrs.field(default=0, converter=to_int, validator=_int_at_least(0))
    scores: list = attrs.field(factory=list, converter=_as_scores)
    _revision = 0  # not a field: bumped by every change (keys the optimizers' scalar caches)

    # Called every step: increments of valid counters stay valid, so they skip attrs'
    # per-assignment checks (the revision is bumped once).

    def begin_epoch(self) -> None:
        """Start an epoch: ``curr_epoch += 1`` and ``curr_batch = 0``."""
        object.__setattr__(self, "curr_epoch", self.curr_epoch + 1)
        object.__setattr__(self, "curr_batch", 0)
        object.__setattr__(self, "_revision", self._revision + 1)

    def begin_batch(self) -> None:
        """Start a mini-batch, before its updates: ``curr_iter += 1``, ``curr_batch += 1``."""
        object.__setattr__(self, "curr_iter", self.curr_iter + 1)
        object.__setattr__(self, "curr_batch", self.curr_batch + 1)
        object.__setattr__(self, "_revision", self._revision + 1)

    def record_score(self, value: float) -> None:
        """Report an evaluation score (e.g. the validation loss after an epoch).

        It is appended to :attr:`scores`. Schedules that react to scores
        (:class:`mxopt.LearningRate.Plateau`) use the whole history from the next
        update on. NaN counts as a score that is never an improvement.
        """
        self.scores.append(_score(value, "a score"))
        object.__setattr__(self, "_revision", getattr(self, "_revision", 0) + 1)


class OptimizerSteps(OptimizationState):
    """A read-only view of an :class:`OptimizationState` that counts optimizer steps of
    ``every`` micro-batches (gradient accumulation): ``curr_iter`` is
    ``ceil(curr_iter / every)`` and ``curr_batch`` is ``ceil(curr_batch / every)``;
    ``batch_size``, ``curr_epoch`` and ``scores`` are the source's (the same score list).

    The updater of ``get_updater(..., accumulate=k)`` hands one to the optimizer in the
    steps it applies, so a loop that calls ``begin_batch()`` once per micro-batch gives
    the schedules the number of optimizer steps, as optax's ``MultiSteps`` gives its inner
    optimizer. It is a snapshot, made again whenever the source changes (:meth:`of`); it
    is an OptimizationState so that every schedule reads it as one.
    """

    @classmethod
    def of(cls, source: OptimizationState, every: int) -> OptimizerSteps:
        """The view of ``source`` counting steps of ``every`` micro-batches."""
        view = object.__new__(cls)
        fields = {
            "batch_size": source.batch_size,
            "curr_epoch": source.curr_epoch,
            "curr_batch": -(-source.curr_batch // every),
            "curr_iter": -(-source.curr_iter // every),
            "scores": source.scores,  # shared, read-only here
            "_revision": source._revision,  # a new view per change: keys stay distinct
            "source": source,
            "every": every,
            "_sealed": True,
        }
        view.__dict__.update(fields)
        return view

    def __setattr__(self, name, value):
        if self.__dict__.get("_sealed") and not name.startswith("_"):
            raise AttributeError(
                f"OptimizerSteps is a read-only view; change its source OptimizationState "
                f"(setting {name!r})"
            )
        super().__setattr__(name, value)

    def _read_only(self, *args) -> None:
        raise AttributeError(
            "OptimizerSteps is a read-only view; advance its source OptimizationState"
        )

    begin_epoch = begin_batch = record_score = _read_only
