"""Cautious updates (Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with
One Line of Code", arXiv:2411.16085, 2024): an option of the momentum optimizers.

With :math:`u` the direction an optimizer would subtract (times the learning rate) and
:math:`g` the gradient it was computed from, a cautious update keeps only the elements
where the two agree in sign and scales the kept ones up so that the tensor moves about
as far as before:

.. math::

    \\phi = [u \\odot g > 0], \\qquad
    W \\leftarrow W - \\eta \\, \\frac{n}{\\lVert\\phi\\rVert_0 + 1} \\, (u \\odot \\phi)

per tensor of :math:`n` elements. The mask is the paper's (Algorithm 1 of
arXiv:2411.16085v4, ``m = (u * g > 0)``); its one-line rescale ``m / (m.mean() + eps)``
is :math:`n / (\\lVert\\phi\\rVert_0 + n\\,\\mathrm{eps})`, and the scale here,
:math:`n / (\\lVert\\phi\\rVert_0 + 1)`, is the authors' reference code's
(``mask * (mask.numel() / (mask.sum() + 1))`` in C-Optim's C-AdamW; pytorch_optimizer's
``cautious=True`` too): the paper's with ``eps = 1/n``. The momentum and the other state
arrays are updated as without the option; a decoupled weight decay is applied as before,
to every element. A zero gradient keeps nothing, so that step moves no weight
(except by the decay).

The scale needs the number of kept elements of the whole tensor before any element is
written, so a cautious step makes two passes: a reducing kernel that computes the new
moments and :math:`u` without writing anything and counts the kept elements, then the
update kernel, which writes the state and applies the masked, scaled step with the scale
as one more scalar. The per-element math of both is the same code (the
:func:`~mxopt.kernels.kernel.device` helpers); no temporary array is made. A packed
buffer is updated tensor by tensor (:attr:`per_tensor`), each with its own scale. On the
CPU the counting pass is a float64 sum in index order (so the count does not depend on the
thread count), which does not vectorize: measured on 4M float32 elements, one thread, a
cautious step took about 3 times as long as a plain one for AdamW and Lion, 4 to 7 times
for SGD with momentum and AdEMAMix.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag
from mxopt.kernels import backends
from mxopt.kernels.kernel import Kernel

__all__ = ["CautiousUpdates", "cautious_option", "cautious_pair", "cautious_scales"]


def cautious_option():
    """The ``cautious`` flag of the optimizers that offer cautious updates (off by default)."""
    return flag(
        False,
        doc="cautious updates: drop the elements whose update disagrees in sign with the "
        "gradient, scale the rest by n / (kept + 1) per tensor (Liang et al. 2024)",
    )


def cautious_pair(count: Kernel, update: Kernel) -> tuple[Kernel, Kernel]:
    """``(count, update)``, checked: ``count`` reduces (its first sum is the number of kept
    elements) and reads only state arrays that ``update`` has; ``update`` has the scalar
    ``scale``."""
    if not count.reduces or "scale" not in update.scalars or set(count.state) - set(update.state):
        raise ValueError(f"{count.name}, {update.name}: not a counting and an update kernel")
    return count, update


def cautious_scales(sizes, kept):
    """``n / (kept + 1)`` (float64, elementwise): the scale of a tensor of ``n`` elements of
    which ``kept`` are kept (``kept`` is an exact float64 count)."""
    return np.asarray(sizes, dtype=np.float64) / (np.asarray(kept, dtype=np.float64) + 1.0)


class CautiousUpdates:
    """Mixin of the optimizers with a ``cautious`` option (before
    :class:`~mxopt.optimizers.base.AbstractOptimizer` in the bases).

    A subclass implements :meth:`cautious_kernels`. Without cautious updates everything
    is the optimizer's own single-kernel step (the same bits and the same fast paths);
    with them, :meth:`prepare` gives the scalars by name and :meth:`apply` runs the
    counting kernel, then the update kernel with the tensor's scale.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # AbstractOptimizer marks a class whose apply is overridden as never single-kernel;
        # here that depends on the options (the property below), unless a subclass
        # overrides apply again.
        if cls.apply is CautiousUpdates.apply and "single_kernel" in cls.__dict__:
            del cls.single_kernel

    def cautious_kernels(self) -> tuple[Kernel, Kernel] | None:
        """``(counting kernel, update kernel)`` (see :func:`cautious_pair`) when the options
        ask for cautious updates that change anything, else ``None``. The update kernel
        reads the same state arrays as :meth:`kernel`."""
        raise NotImplementedError

    @property
    def per_tensor(self) -> bool:
        """Cautious updates scale each tensor by its own count: a packed buffer is updated
        segment by segment."""
        return self.cautious_kernels() is not None

    @property
    def single_kernel(self) -> bool:
        """One call of :meth:`kernel` per update, unless cautious updates are on."""
        return self.cautious_kernels() is None

    def prepare(self, v, step, memory):
        if self.cautious_kernels() is None:
            return super().prepare(v, step, memory)
        return self.kernel_scalars(v, step, memory)

    def apply(self, backend, w, g, arrays, prepared, check):
        kernels = self.cautious_kernels()
        if kernels is None:
            return super().apply(backend, w, g, arrays, prepared, check)
        count, update = kernels
        scalars = count.pack(prepared)
        bad, kept, _ = backend.run(count, w, g, arrays.arrays_for(count), scalars, check)
        if bad:
            return bad
        scale = float(cautious_scales(w.size, kept))
        scalars = update.pack({**prepared, "scale": scale})
        backend.run(update, w, g, arrays.arrays_for(update), scalars, False)
        return 0

    def apply_segments(self, backend, w, g, arrays, offsets, prepared, check):
        """Every tensor of a packed run with its own scale, in two calls."""
        kernels = self.cautious_kernels()
        if kernels is None:  # not per tensor: the engine does not come here
            return super().apply_segments(backend, w, g, arrays, offsets, prepared, check)
        count, update = kernels
        segments = len(offsets) - 1
        table = backends.scalar_table(w, count.rows(prepared, segments))
        bad, sums = backend.run_segments(count, w, g, arrays.arrays_for(count), offsets, table,
                                         check)  # fmt: skip
        if bad:
            return bad
        scales = cautious_scales(np.diff(offsets), backends.to_host(sums)[:, 0])
        rows = update.rows({**prepared, "scale": scales}, segments)
        table = backends.scalar_table(w, rows)
        backend.run_segments(update, w, g, arrays.arrays_for(update), offsets, table, False)
        return 0
