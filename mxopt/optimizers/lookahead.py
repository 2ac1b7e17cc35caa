"""Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
back", NeurIPS 2019, arXiv:1907.08610), wrapping any optimizer.

The wrapped optimizer moves the weights (the "fast" weights) as usual. A copy of
the weights taken before the first update (the "slow" weights, state
``"lookahead_slow"``) follows them from a distance: after every ``k``-th update
of a weight,

.. math::

    \\phi \\leftarrow \\phi + \\alpha (W - \\phi), \\qquad W \\leftarrow \\phi

so the weights jump back to a point between where they were ``k`` updates ago
and where the inner optimizer took them. ``k`` counts the updates of each
weight (its ``WeightState.step``), as fastai's ``Lookahead`` counts steps.
"""

from __future__ import annotations

import inspect

import attrs

from mxopt.core.checks import shown
from mxopt.core.fields import hyperparameter, integer
from mxopt.kernels.kernel import Kernel
from mxopt.optimizers.base import (
    NO_MULTIPLIERS,
    WEIGHT_COPY,
    About,
    AbstractOptimizer,
    option_values,
    register,
)
from mxopt.optimizers.options import options
from mxopt.optimizers.radam import RAdam
from mxopt.optimizers.sgd import SGD

__all__ = ["Lookahead", "LookaheadOptions"]


def lookahead_sync_element(i, w, g, lookahead_slow, alpha):
    p = lookahead_slow[i]
    p = p + alpha * (w[i] - p)
    lookahead_slow[i] = p
    w[i] = p


LOOKAHEAD_SYNC_KERNEL = Kernel(
    name="lookahead_sync",
    state=("lookahead_slow",),
    cpu=lookahead_sync_element,
    cuda="""
    T p = lookahead_slow[i];
    p = p + alpha * (w[i] - p);
    lookahead_slow[i] = p;
    w[i] = p;
""",
)


def _check_inner(instance, attribute, value):
    if not isinstance(value, AbstractOptimizer):
        raise TypeError(
            f"Lookahead: inner must be an mxopt optimizer (e.g. mxopt.RAdam()), got {shown(value)}"
        )
    if isinstance(value, Lookahead):
        raise ValueError("Lookahead: inner must not itself be a Lookahead")


@options
class LookaheadOptions:
    """Options of :class:`Lookahead`."""

    inner: AbstractOptimizer = attrs.field(validator=_check_inner, metadata={"doc": "optimizer"})
    k: int = integer(6, ge=1, doc="synchronise every k updates of a weight")
    alpha: float = hyperparameter(0.5, ge=0.0, le=1.0, doc="step of the slow weights")


@register
class Lookahead(AbstractOptimizer):
    """Lookahead around any optimizer: every ``k`` updates, pull back towards slow weights.

    ``Lookahead(inner, *, k=6, alpha=0.5, state=None)``

    Michael R. Zhang, James Lucas, Geoffrey Hinton, Jimmy Ba, "Lookahead Optimizer:
    k steps forward, 1 step back", NeurIPS 2019, arXiv:1907.08610. The inner
    optimizer moves the weight (the "fast" weights) as usual; slow weights
    :math:`\\phi`, a copy of the weight taken before its first update, follow.
    After every ``k``-th update of a weight:

    .. math::

        \\phi \\leftarrow \\phi + \\alpha (W - \\phi), \\quad W \\leftarrow \\phi

    ``k`` counts the updates of each weight (its ``WeightState.step``). ``state``
    (the OptimizationState) is the inner optimizer's: reading or assigning it on
    the wrapper reads or assigns the inner one's.

    State: ``"lookahead_slow"`` (:math:`\\phi`), 4 bytes per float32 parameter
    more than the inner optimizer, beside the inner optimizer's arrays (12 for
    ``Lookahead(RAdam())``).

    Equivalents: fastai's ``Lookahead(opt, k=6, alpha=0.5)`` is the same rule and
    the same defaults. ``optax.lookahead(fast_optimizer, sync_period=k,
    slow_step_size=alpha)`` has the same rule on a pair of parameter sets.
    torch.optim has no Lookahead. :func:`mxopt.Ranger` is Lookahead around RAdam.
    """

    Options = LookaheadOptions
    about = About(
        family="wrappers",
        same_as="fastai's `Lookahead`; `optax.lookahead`",
        weight_decay="the inner optimizer's",
        epsilon="the inner optimizer's",
        examples=({"inner": lambda: SGD(momentum=0.9)}, {"inner": RAdam}),
    )
    __signature__ = inspect.Signature(
        [
            inspect.Parameter("inner", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("k", inspect.Parameter.KEYWORD_ONLY, default=6),
            inspect.Parameter("alpha", inspect.Parameter.KEYWORD_ONLY, default=0.5),
            inspect.Parameter("state", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
    )

    def __init__(self, inner: AbstractOptimizer | None = None, *, state=None, **kwargs):
        if inner is not None:
            kwargs["inner"] = inner
        if state is None and isinstance(kwargs.get("inner"), AbstractOptimizer):
            state = kwargs["inner"].state  # keep the inner optimizer's state
        super().__init__(state=state, **kwargs)

    @property
    def inner(self) -> AbstractOptimizer:
        """The wrapped optimizer."""
        return self.opts.inner

    @property
    def state(self):
        """The :class:`~mxopt.OptimizationState` of the inner optimizer."""
        return self.opts.inner.state

    @state.setter
    def state(self, value) -> None:
        self.opts.inner.state = value

    @property
    def has_memory(self) -> bool:
        return self.inner.has_memory

    def revision(self):
        return (self.opts._revision, self.inner.revision())

    def values(self, state, mult=NO_MULTIPLIERS):
        """The inner optimizer's options (what its kernels read)."""
        return self.inner.values(state, mult)

    def next_memory(self, v, step, memory):
        return self.inner.next_memory(v, step, memory)

    def require_state(self):
        return self.inner.require_state()

    def lr_value(self, state) -> float:
        return self.inner.lr_value(state)

    def gradient_rescale(self, state) -> float:
        return self.inner.gradient_rescale(state)

    def precision(self):
        return self.inner.precision()

    def compressed_state(self):
        return self.inner.compressed_state()

    def kernel(self) -> Kernel:
        return self.inner.kernel()

    def kernel_scalars(self, v, step, memory):
        return self.inner.kernel_scalars(v, step, memory)

    def prepare(self, v, step, memory):
        """The inner optimizer's prepared step, and ``alpha`` when this step synchronises
        (``None`` otherwise)."""
        alpha = option_values(self.opts, v.state).alpha if step % self.opts.k == 0 else None
        return self.inner.prepare(v, step, memory), alpha

    def state_spec(self, shape) -> dict:
        spec = dict(self.inner.state_spec(shape))
        spec["lookahead_slow"] = WEIGHT_COPY
        return spec

    def state_spec_for(self, index, shape) -> dict:
        spec = dict(self.inner.state_spec_for(index, shape))
        spec["lookahead_slow"] = WEIGHT_COPY
        return spec

    @property
    def per_tensor(self) -> bool:
        return self.inner.per_tensor

    def apply_segments(self, backend, w, g, arrays, offsets, prepared, check):
        inner, alpha = prepared
        bad = self.inner.apply_segments(backend, w, g, arrays, offsets, inner, check)
        if not bad and alpha is not None:  # elementwise: one call over the whole buffer
            self._sync(backend, w, g, arrays, alpha)
        return bad

    def apply(self, backend, w, g, arrays, prepared, check):
        inner, alpha = prepared
        bad = self.inner.apply(backend, w, g, arrays, inner, check)
        if not bad and alpha is not None:
            self._sync(backend, w, g, arrays, alpha)
        return bad

    @staticmethod
    def _sync(backend, w, g, arrays, alpha):
        slow = arrays.arrays_for(LOOKAHEAD_SYNC_KERNEL)
        backend.run(LOOKAHEAD_SYNC_KERNEL, w, g, slow, (alpha,), False)
