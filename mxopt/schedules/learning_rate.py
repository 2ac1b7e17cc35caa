"""Learning-rate schedulers, exported as ``mxopt.LearningRate``: this module is the namespace.

Every scheduler is a pure function of the :class:`~mxopt.OptimizationState`:
``get_learning_rate(scheduler, state)`` gives the same value for the same state
whatever was asked before. Each docstring states the unit the scheduler counts
and its value at the first update of a training run, where the training loop
has already advanced the state to ``curr_epoch == 1`` and ``curr_iter == 1``.

Three families, all immutable attrs classes whose fields are numbers, strings,
lists or other schedulers (``FromGenerator`` and ``FromCallable`` hold Python
objects and are the exceptions):

* MXNet.jl's: :class:`Fixed`, :class:`Exp`, :class:`Inv` (``t = curr_epoch`` or
  ``curr_iter``, so the first update sees ``t = 1``).
* MXNet's Python schedulers: :class:`Factor`, :class:`MultiFactor`, :class:`Poly`,
  :class:`Cosine`, counting ``n = curr_iter`` (MXNet's ``num_update``, 1 at the
  first update), with the values MXNet gives for increasing queries.
* The torch.optim / optax / Thinc set, counting the zero-based ``t = curr_iter - 1``
  (or ``curr_epoch - 1`` with ``unit="epoch"``) so the first update gets the
  value at ``t = 0``, as torch (``last_epoch`` 0), optax (``count`` 0) and Thinc
  (step 0) do: :class:`Step`, :class:`MultiStep`, :class:`Exponential`,
  :class:`Linear`, :class:`Polynomial`, :class:`CosineAnnealing`,
  :class:`WarmupCosine`, :class:`CosineRestarts`, :class:`OneCycle`,
  :class:`Cyclic`, :class:`Decaying`, :class:`Compounding`,
  :class:`SlantedTriangular`, :class:`WarmupLinear`, :class:`PiecewiseConstant`,
  :class:`FromList`, :class:`FromGenerator`, :class:`FromCallable`; the
  score-driven :class:`Plateau`; and the combinators :class:`Warmup`,
  :class:`Join` and :class:`Product`.

Any of them may also be given to an optimizer for any float option (``beta2``,
``weight_decay``, ``grad_clip``...): ``mxopt.ADAM(beta1=LearningRate.Linear(0.95,
0.9, 1000))``. ``docs/schedules.md`` lists every scheduler with its formula and
its torch.optim, optax, Thinc and fastai equivalent. The classes live in the family
modules :mod:`~mxopt.schedules.mxnet`, :mod:`~mxopt.schedules.decay`,
:mod:`~mxopt.schedules.cycles` and :mod:`~mxopt.schedules.compose`.
"""

from __future__ import annotations

from mxopt.core.checks import shown
from mxopt.core.schedule import AbstractLearningRateScheduler
from mxopt.core.state import OptimizationState
from mxopt.schedules.compose import FromCallable, FromGenerator, FromList, Join, Product, Warmup
from mxopt.schedules.cycles import CosineRestarts, Cyclic, OneCycle, SlantedTriangular
from mxopt.schedules.decay import (
    Compounding,
    CosineAnnealing,
    Decaying,
    Exponential,
    Linear,
    MultiStep,
    PiecewiseConstant,
    Plateau,
    Polynomial,
    Step,
    WarmupCosine,
    WarmupLinear,
)
from mxopt.schedules.mxnet import Cosine, Exp, Factor, Fixed, Inv, MultiFactor, Poly

__all__ = [
    "Fixed",
    "Exp",
    "Inv",
    "Factor",
    "MultiFactor",
    "Poly",
    "Cosine",
    "Step",
    "MultiStep",
    "Exponential",
    "Linear",
    "Polynomial",
    "CosineAnnealing",
    "WarmupCosine",
    "CosineRestarts",
    "OneCycle",
    "Cyclic",
    "Decaying",
    "Compounding",
    "SlantedTriangular",
    "WarmupLinear",
    "PiecewiseConstant",
    "FromList",
    "FromGenerator",
    "FromCallable",
    "Plateau",
    "Warmup",
    "Join",
    "Product",
    "get_learning_rate",
    "get_lr_scheduler",
]


def get_learning_rate(scheduler: AbstractLearningRateScheduler, state: OptimizationState) -> float:
    """The learning rate ``scheduler`` gives at ``state``."""
    if not isinstance(scheduler, AbstractLearningRateScheduler):
        raise TypeError(
            f"get_learning_rate: scheduler must be a learning-rate scheduler "
            f"(e.g. mxopt.LearningRate.Fixed), got {shown(scheduler)}"
        )
    if not isinstance(state, OptimizationState):
        raise TypeError(
            f"get_learning_rate: state must be an OptimizationState, got {shown(state)}"
        )
    return scheduler.value(state)


def get_lr_scheduler(scheduler: AbstractLearningRateScheduler | None, lr: float):
    """``scheduler`` if one is given, else ``Fixed(lr)``: a scheduler wins over ``lr``."""
    return scheduler if scheduler is not None else Fixed(lr)
