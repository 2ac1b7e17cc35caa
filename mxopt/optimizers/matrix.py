"""What the optimizers of matrices (Muon, SOAP) share: the ``fallback`` optimizer of the
weights that are not matrices, the routing of each weight to one or the other, and the
array module (NumPy or CuPy) their matrix products run on.

A weight is a *matrix* when it has two or more axes and its index is not named in
``fallback_indices``; it is then seen as a ``(shape[0], -1)`` matrix. Every other weight
is updated by the ``fallback`` optimizer (its own options, state and kernels), or refused
with an error naming its index when ``fallback=None``. The routing happens when a
weight's state is made (:meth:`MatrixOptimizer.state_spec_for`): a matrix's state holds
the optimizer's :attr:`~MatrixOptimizer.matrix_marker` array, a fallback weight's state
never does (the ``fallback`` option refuses optimizers whose state would), and
:meth:`MatrixOptimizer.apply` reads the route from the state.
"""

from __future__ import annotations

import fnmatch
from typing import ClassVar

import attrs
import numpy as np

from mxopt.core.checks import owner_name, shown
from mxopt.optimizers.adamw import AdamW
from mxopt.optimizers.base import AbstractOptimizer

__all__ = ["MatrixOptimizer", "array_module", "fallback_indices_option", "fallback_option"]


def array_module(backend):
    """The array module of a kernel backend: NumPy, or CuPy for :mod:`mxopt.kernels.cuda`."""
    if backend.__name__ == "mxopt.kernels.cuda":
        import cupy

        return cupy
    return np


# -- the options ------------------------------------------------------------------------------


def fallback_option(marker: str):
    """The ``fallback`` option of a matrix optimizer whose matrices keep the state array
    ``marker``: an mxopt optimizer (a fresh ``AdamW()`` by default) or None."""

    def check(instance, attribute, value):
        if value is None:
            return
        owner = owner_name(instance)
        if not isinstance(value, AbstractOptimizer):
            raise TypeError(
                f"{owner}: fallback must be an mxopt optimizer (e.g. mxopt.AdamW()) or None, "
                f"got {shown(value)}"
            )
        if isinstance(value, MatrixOptimizer):
            raise ValueError(
                f"{owner}: fallback must not itself be a {type(value).__name__} (an optimizer "
                f"of matrices; the fallback updates the other weights)"
            )
        if getattr(value, "evaluation_point", None) or getattr(value, "keeps_average", False):
            raise ValueError(
                f"{owner}: fallback {type(value).__name__} keeps its own evaluation point of "
                f"the weights, which {owner}'s matrices would not have; choose another fallback"
            )
        if getattr(value, "step_sums_kernel", None) is not None:
            raise ValueError(
                f"{owner}: fallback {type(value).__name__} needs sums over every weight of a "
                f"step, which {owner}'s matrices do not take part in; choose another fallback"
            )
        if marker in value.state_spec((1,)):
            raise ValueError(
                f"{owner}: fallback {type(value).__name__} keeps a state array called "
                f"{marker!r}, the name of {owner}'s own; choose another fallback"
            )

    return attrs.field(
        default=attrs.Factory(AdamW),
        validator=check,
        metadata={"doc": "optimizer of the weights that are not matrices (None: refuse them)"},
    )


def _hashable(value):
    """Lists (from a config) as tuples, so that they can be indices."""
    return tuple(map(_hashable, value)) if isinstance(value, list) else value


def _to_indices(value):
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(_hashable(v) for v in value)
    return value


def _check_indices(instance, attribute, value):
    owner = owner_name(instance)
    if not isinstance(value, tuple):
        raise TypeError(
            f"{owner}: fallback_indices must be a list or tuple of indices or glob patterns "
            f"(e.g. ('embedding', '*head*')), got {shown(value)}"
        )
    for index in value:
        try:
            hash(index)
        except TypeError:
            raise TypeError(
                f"{owner}: fallback_indices holds {shown(index)}, which is not hashable (no index)"
            ) from None


def fallback_indices_option():
    """The ``fallback_indices`` option: indices, or glob patterns matched against
    ``str(index)``, of matrices to hand to the fallback (embeddings, output heads)."""
    return attrs.field(
        default=(),
        converter=_to_indices,
        validator=_check_indices,
        metadata={"doc": "indices, or glob patterns matched against str(index), for the fallback"},
    )


def _is_pattern(key) -> bool:
    return isinstance(key, str) and any(ch in key for ch in "*?[")


# -- the optimizer ----------------------------------------------------------------------------


class MatrixOptimizer(AbstractOptimizer):
    """Base class of the optimizers that update matrices as matrices (Muon, SOAP).

    A subclass declares ``fallback = fallback_option(marker)`` and ``fallback_indices =
    fallback_indices_option()`` among its options, sets :attr:`matrix_marker` to
    ``marker``, and implements :meth:`matrix_state_spec`, :meth:`kernel_scalars` (the
    host scalars of a matrix's step) and :meth:`apply_matrix`. This class routes each
    weight, keeps the fallback's :class:`~mxopt.OptimizationState` and revision in step
    with its own, prepares both, and hands the fallback its weights on every path (one
    index, lists, packed buffers: a buffer's run of fallback weights is packed as the
    fallback would pack it, matrices are updated one by one).
    """

    #: The state array that every matrix's state holds (and no fallback's state does).
    matrix_marker: ClassVar[str]
    per_tensor = True  # each matrix is updated on its own

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__ and "fallback" in cls._option_names:
            # help() and the docs show the default fallback as what it is (attrs keeps a
            # Factory)
            cls.__signature__ = cls.__signature__.replace(
                parameters=[
                    p.replace(default=AdamW()) if p.name == "fallback" else p
                    for p in cls.__signature__.parameters.values()
                ]
            )

    def __init__(self, *, state=None, **options):
        super().__init__(state=state, **options)
        fallback = self.opts.fallback
        if state is None and fallback is not None and fallback.state is not None:
            self.state = fallback.state  # keep the fallback's state

    @property
    def state(self):
        """The :class:`~mxopt.OptimizationState` read by this optimizer and its fallback."""
        return self._state

    @state.setter
    def state(self, value) -> None:
        AbstractOptimizer.state.fset(self, value)
        fallback = self.opts.fallback if "opts" in self.__dict__ else None
        if fallback is not None and value is not None:
            fallback.state = value

    @property
    def fallback(self) -> AbstractOptimizer | None:
        """The optimizer of the weights that are not matrices."""
        return self.opts.fallback

    @property
    def has_memory(self) -> bool:
        fallback = self.opts.fallback
        return fallback is not None and fallback.has_memory

    def revision(self):
        fallback = self.opts.fallback
        return (self.opts._revision, None if fallback is None else fallback.revision())

    def next_memory(self, v, step, memory):
        fallback = self.opts.fallback
        return fallback.next_memory(fallback.values(v.state, v.mult), step, memory)

    # -- which weights are matrices -----------------------------------------------------------

    def is_matrix(self, index, shape) -> bool:
        """Whether this optimizer itself updates the weight at ``index`` (of ``shape``): two
        or more axes, and not named in ``fallback_indices``."""
        if len(shape) < 2:
            return False
        marked = self.opts.fallback_indices
        if not marked:
            return True
        text = None
        for key in marked:
            if _is_pattern(key):
                text = str(index) if text is None else text
                if fnmatch.fnmatchcase(text, key):
                    return False
            elif key == index:
                return False
        return True

    def matrix_state_spec(self, shape: tuple) -> dict:
        """The state arrays of a matrix of ``shape`` (two or more axes), holding
        :attr:`matrix_marker`."""
        raise NotImplementedError

    def state_spec(self, shape) -> dict:
        """By shape alone: a matrix's state for two or more axes, else the fallback's
        (none with ``fallback=None``; :meth:`state_spec_for` then refuses the weight)."""
        if len(shape) >= 2:
            return self.matrix_state_spec(tuple(shape))
        fallback = self.opts.fallback
        return {} if fallback is None else fallback.state_spec(shape)

    def state_spec_for(self, index, shape) -> dict:
        if self.is_matrix(index, shape):
            return self.matrix_state_spec(tuple(shape))
        fallback = self.opts.fallback
        if fallback is None:
            why = "is not a matrix" if len(shape) < 2 else "is in fallback_indices"
            name = type(self).__name__
            raise ValueError(
                f"index {shown(index)}: {name}(fallback=None) cannot update this weight of "
                f"shape {tuple(shape)}: it {why}; give {name} a fallback optimizer (e.g. "
                f"fallback=mxopt.AdamW()) or update it with another updater"
            )
        return fallback.state_spec_for(index, shape)

    # -- the step -----------------------------------------------------------------------------

    def prepare(self, v, step, memory):
        """The matrices' scalars (:meth:`kernel_scalars`) and the fallback's prepared step
        (``None`` without one)."""
        fallback = self.opts.fallback
        if fallback is not None:
            fallback = fallback.prepare(fallback.values(v.state, v.mult), step, memory)
        return self.kernel_scalars(v, step, memory), fallback

    def apply(self, backend, w, g, arrays, prepared, check):
        x, fallback = prepared
        if self.matrix_marker not in arrays.flat:  # a weight of the fallback (its state says so)
            return self.opts.fallback.apply(backend, w, g, arrays, fallback, check)
        n = w.size
        if n == 0:
            return 0
        rows = arrays.shape[0]
        cols = n // rows
        xp = array_module(backend)
        if xp is np:
            return self.apply_matrix(backend, np, w, g, arrays, x, rows, cols, check)
        with backend.device_of(w):  # temporaries and products on w's GPU
            return self.apply_matrix(backend, xp, w, g, arrays, x, rows, cols, check)

    def apply_matrix(self, backend, xp, w, g, arrays, x, rows, cols, check) -> int:
        """Update the ``rows x cols`` matrix ``w`` (flat, non-empty) with the scalars ``x``
        of :meth:`kernel_scalars`; ``xp`` is its array module. As :meth:`apply`: with
        ``check``, the first kernel counts the non-finite gradient values and, if there are
        any, their number is returned before anything is written."""
        raise NotImplementedError

    def apply_segments(self, backend, w, g, arrays, offsets, prepared, check):
        """A packed run holds only the fallback's weights (a matrix's state differs from a
        vector's, so buffers with matrices are updated weight by weight)."""
        fallback = self.opts.fallback
        if fallback.per_tensor:
            return fallback.apply_segments(backend, w, g, arrays, offsets, prepared[1], check)
        return fallback.apply(backend, w, g, arrays, prepared[1], check)
