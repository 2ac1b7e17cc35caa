"""Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost", ICML 2018, arXiv:1804.04235), as torch.optim.Adafactor computes it.

An Adam-like method without first moment whose second moment of a matrix is
kept factored: for a weight of shape ``(*lead, R, C)`` only the running means
of :math:`g^2` over each row (``R`` values) and over each column (``C``
values) are stored, per leading index. For the ``k``-th update of a weight,
with :math:`g` the :func:`~mxopt.normalized_gradient` (no L2 term unless
``decoupled_weight_decay=False``):

.. math::

    \\hat\\beta_{2,k} &= 1 - k^{\\tau}, \\qquad \\rho_k = \\min(\\eta, 1/\\sqrt{k}), \\qquad
    \\alpha_k = \\max(\\epsilon_2, \\operatorname{RMS}(W))\\, \\rho_k \\\\
    W &\\leftarrow (1 - \\eta\\lambda) W \\\\
    r &\\leftarrow r + (1-\\hat\\beta_{2,k}) (\\operatorname{mean}_c g^2 - r), \\qquad
    c \\leftarrow c + (1-\\hat\\beta_{2,k}) (\\operatorname{mean}_r g^2 - c) \\\\
    \\hat V &= \\frac{r\\, c^\\top}{\\max(\\operatorname{mean}(r), \\epsilon_1)}
        \\quad (\\text{or } \\hat V \\leftarrow \\hat V + (1-\\hat\\beta_{2,k})(g^2 - \\hat V)
        \\text{ for 0-d and 1-d weights}) \\\\
    U &= g / \\sqrt{\\max(\\hat V, \\epsilon_1^2)}, \\qquad
    W \\leftarrow W - \\frac{\\alpha_k}{\\max(1, \\operatorname{RMS}(U) / d)}\\, U

:math:`\\operatorname{RMS}(W)` is taken before the decay.

Passes over memory. 0-d and 1-d weights: two fused kernels (the first updates
:math:`\\hat V` and sums :math:`W^2` and :math:`U^2`, the second applies the
step), like LAMB. Matrices and batches of matrices: (1) sums of :math:`g^2`
over chunks of at most :data:`CHUNK` elements of each row and of each column,
(2) the row and column factors and the per-matrix row means, (3) sums of
:math:`W^2` and :math:`U^2` over blocks of :data:`CHUNK` elements, (4) the
step. Every sum is float64, in a fixed order that depends only on the shape,
so the CPU (Numba) and GPU (CUDA) code of this path give the same bits,
whatever the thread count. Its temporaries are vectors of the size of the
factors or of ``n / CHUNK``, never of the weight's size.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels.factored import run_factored
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
)

__all__ = ["Adafactor", "AdafactorOptions"]

# ---------------------------------------------------------------------------------------
# 0-d and 1-d weights: full second moment, two fused kernels.


def adafactor_vector_element(i, w, g, variance, rescale, clip, wd, w8, eps1sq):
    wi = w[i]
    gi = normalize_gradient_element(g[i], wi, rescale, clip, wd)
    v = variance[i]
    v = v + w8 * (gi * gi - v)
    variance[i] = v
    if v < eps1sq:
        v = eps1sq
    u = gi / np.sqrt(v)
    return np.float64(wi) * np.float64(wi), np.float64(u) * np.float64(u)


ADAFACTOR_VECTOR_KERNEL = Kernel(
    name="adafactor_vector",
    state=("variance",),
    cpu=adafactor_vector_element,
    reduces=True,
    cuda="""
    const T wi = w[i];
    const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
    T v = variance[i];
    v = v + w8 * (gi * gi - v);
    variance[i] = v;
    if (v < eps1sq) v = eps1sq;
    const T u = gi / sqrt(v);
    return mx_pair{(double)wi * (double)wi, (double)u * (double)u};
""",
)


def adafactor_vector_step_element(i, w, g, variance, rescale, clip, wd, eps1sq, decay, lr_t):
    wi = w[i]
    gi = normalize_gradient_element(g[i], wi, rescale, clip, wd)
    v = variance[i]
    if v < eps1sq:
        v = eps1sq
    w[i] = wi * decay - lr_t * (gi / np.sqrt(v))


ADAFACTOR_VECTOR_STEP_KERNEL = Kernel(
    name="adafactor_vector_step",
    state=("variance",),
    cpu=adafactor_vector_step_element,
    cuda="""
    const T wi = w[i];
    const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
    T v = variance[i];
    if (v < eps1sq) v = eps1sq;
    w[i] = wi * decay - lr_t * (gi / sqrt(v));
""",
)

# ---------------------------------------------------------------------------------------
# Options and optimizer


@options
class AdafactorOptions(AbstractOptimizerOptions):
    """Options of :class:`Adafactor` (defaults as torch.optim.Adafactor)."""

    lr: float = hyperparameter(
        1e-2, ge=0.0, doc="cap of the relative step size min(lr, 1/sqrt(k)); scales the decay"
    )
    beta2_decay: float = hyperparameter(-0.8, le=0.0, doc="tau: 1 - beta2_k = k**tau")
    eps1: float = hyperparameter(
        0.0, ge=0.0, doc="floor of sqrt(V) and of the row-factor mean; 0: the dtype's epsilon"
    )
    eps2: float = hyperparameter(1e-3, ge=0.0, doc="floor of RMS(W) in the step size")
    d: float = hyperparameter(1.0, ge=1.0, doc="clipping threshold of RMS(U)")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)


@register
class Adafactor(AbstractOptimizer):
    """Adafactor (Shazeer & Stern 2018): factored second moment, relative step sizes.

    ``Adafactor(*, lr=1e-2, beta2_decay=-0.8, eps1=0.0, eps2=1e-3, d=1.0, grad_clip=0.0,
    weight_decay=0.0, decoupled_weight_decay=True, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Noam Shazeer, Mitchell Stern, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost", ICML 2018, arXiv:1804.04235, in torch.optim.Adafactor's
    form. For the ``k``-th update of a weight (``k`` counts that weight's
    updates), with :math:`\\tau` = ``beta2_decay`` and :math:`g` the
    :func:`~mxopt.normalized_gradient` (no L2 term unless
    ``decoupled_weight_decay=False``):

    .. math::

        1-\\hat\\beta_{2,k} &= k^{\\tau}, \\quad \\rho_k = \\min(\\eta, k^{-1/2}), \\quad
        \\alpha_k = \\max(\\epsilon_2, \\operatorname{RMS}(W)) \\rho_k \\\\
        r &\\leftarrow r + k^{\\tau} (\\operatorname{mean}_{c} g^2 - r), \\quad
        c \\leftarrow c + k^{\\tau} (\\operatorname{mean}_{r} g^2 - c), \\quad
        \\hat V = r c^\\top / \\max(\\operatorname{mean}(r), \\epsilon_1) \\\\
        U &= g / \\sqrt{\\max(\\hat V, \\epsilon_1^2)}, \\qquad
        W \\leftarrow (1-\\eta\\lambda) W - \\frac{\\alpha_k}{\\max(1,
        \\operatorname{RMS}(U)/d)} U

    :math:`\\operatorname{RMS}(W)` is taken before the decay. No first moment, and
    a step that shrinks like :math:`1/\\sqrt k`. A weight of 2 or
    more dimensions, shape ``(*lead, R, C)``, is factored over its last two
    dimensions, separately for each leading index. 0-d and 1-d weights keep the
    full :math:`\\hat V \\leftarrow \\hat V + k^\\tau (g^2 - \\hat V)` (Adam's
    second moment without first moment). ``eps1=0`` (the default) means the
    machine epsilon of the weight's dtype, as torch's ``eps=(None, ...)``; an
    exact 0 cannot be asked for (use a tiny positive value). A weight with no
    elements is left alone (its step count still advances).

    State: ``"row_var"`` of shape ``(*lead, R, 1)`` and ``"col_var"`` of shape
    ``(*lead, 1, C)`` for matrices (torch's names and shapes), 0.1875 bytes per
    float32 parameter for a (64, 32) matrix; ``"variance"`` shaped like the weight
    (4 bytes per float32 parameter) for 0-d and 1-d weights. Memory: ``R + C``
    values for an ``R x C`` matrix, i.e. ``itemsize * (R + C) / (R C)`` bytes per
    parameter (0.008 bytes for a float32 1024 x 1024 matrix, against 8 for Adam).
    A step allocates float64 vectors of ``R ceil(C/4096) + C ceil(R/4096) + 2
    ceil(n/4096)`` values per matrix, never one of size ``n``.

    Equivalents: with ``batch_size=1`` this is ``torch.optim.Adafactor(lr,
    beta2_decay, eps=(eps1, eps2), d, weight_decay, maximize)`` as
    ``Adafactor(lr=lr, beta2_decay=beta2_decay, eps1=eps1 or 0.0, eps2=eps2, d=d,
    weight_decay=weight_decay, maximize=maximize)`` (torch's ``eps1=None`` is
    ``eps1=0.0``); the defaults are torch's. With ``decoupled_weight_decay=False``
    the decay is instead L2 added to the gradient (MXNet.jl's convention). optax's
    ``adafactor`` differs (its epsilon is added to :math:`g^2`, it factors only
    large dimensions, and it has no ``lr`` cap on :math:`\\rho_k`).
    """

    Options = AdafactorOptions
    #: RMS(W) and RMS(U) are per tensor: a packed run of vectors is updated tensor by tensor
    per_tensor = True
    about = About(
        family="adaptive",
        same_as="`torch.optim.Adafactor` with `eps=(eps1 or None, eps2)`",
        weight_decay="decoupled; `decoupled_weight_decay=False` for coupled L2",
        epsilon="as torch: `eps1` floors `V`, `eps2` floors `RMS(W)`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADAFACTOR_VECTOR_KERNEL

    def state_spec(self, shape: tuple) -> dict:
        shape = tuple(shape)
        if len(shape) >= 2:
            return {
                "row_var": ((*shape[:-1], 1), 0.0),
                "col_var": ((*shape[:-2], 1, shape[-1]), 0.0),
            }
        return {"variance": 0.0}

    def kernel_scalars(self, v, step, memory):
        """Every host scalar of the step that does not depend on the weight's size or dtype
        (``eps1`` is 0 when the dtype's machine epsilon is meant)."""
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2,
            "w8": float(step) ** v.beta2_decay, "eps1": v.eps1, "eps2": v.eps2, "d": v.d,
            "rho": min(v.lr, 1.0 / math.sqrt(step)), "decay": v.decay_factor,
        }  # fmt: skip

    def prepare(self, v, step, memory):
        return self.kernel_scalars(v, step, memory)

    @staticmethod
    def sized_scalars(x: dict, n: int, dtype) -> dict:
        """``x`` completed for a weight of ``n`` elements and ``dtype``: ``eps1`` (the dtype's
        epsilon when 0), ``eps1sq`` and ``step_size(sum_w2, sum_u2)``, which gives
        :math:`\\alpha_k / \\max(1, \\operatorname{RMS}(U)/d)` from the sums of
        :math:`W^2` and :math:`U^2`."""
        eps1 = x["eps1"] or float(np.finfo(dtype).eps)
        eps2, d, rho, root_n = x["eps2"], x["d"], x["rho"], math.sqrt(n)

        def step_size(sum_w2: float, sum_u2: float) -> float:
            alpha = max(eps2, math.sqrt(sum_w2) / root_n) * rho
            return alpha / max(1.0, math.sqrt(sum_u2) / (root_n * d))

        return {**x, "eps1": eps1, "eps1sq": eps1 * eps1, "step_size": step_size}

    def apply(self, backend, w, g, arrays, prepared, check):
        n = w.size
        if n == 0:
            return 0
        x = self.sized_scalars(prepared, n, w.dtype)
        if "variance" in arrays.flat:
            state = arrays.arrays_for(ADAFACTOR_VECTOR_KERNEL)
            scalars = ADAFACTOR_VECTOR_KERNEL.pack(x)
            bad, sum_w2, sum_u2 = backend.run(ADAFACTOR_VECTOR_KERNEL, w, g, state, scalars, check)
            if bad:
                return bad
            step = ADAFACTOR_VECTOR_STEP_KERNEL.pack({**x, "lr_t": x["step_size"](sum_w2, sum_u2)})
            backend.run(ADAFACTOR_VECTOR_STEP_KERNEL, w, g, state, step, False)
            return 0
        flat = arrays.flat
        return run_factored(backend, w, g, flat["row_var"], flat["col_var"], arrays.shape, x, check)
