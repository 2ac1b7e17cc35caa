"""Muon: momentum orthogonalized by Newton-Schulz (Jordan et al. 2024, "Muon: An optimizer
for hidden layers in neural networks", https://kellerjordan.github.io/posts/muon/; Liu et
al., "Muon is Scalable for LLM Training", 2025, arXiv:2502.16982), as torch.optim.Muon.

For a weight seen as an ``R x C`` matrix (``shape[0]`` rows, the other axes flattened
into the columns), with :math:`g` the clipped, rescaled gradient (no L2 term: the
decay is decoupled) and :math:`\\mu` the momentum:

.. math::

    B &\\leftarrow \\mu B + (1-\\mu) g, \\qquad
    U = \\begin{cases} (1-\\mu) g + \\mu B & \\text{nesterov} \\\\
        B & \\text{else} \\end{cases} \\\\
    X_0 &= U / \\max(\\lVert U \\rVert_F, \\epsilon), \\qquad
    X_{j+1} = a X_j + (b A_j + c A_j^2) X_j, \\quad A_j = X_j X_j^\\top
    \\quad (j < \\text{ns\\_steps}) \\\\
    W &\\leftarrow (1 - \\eta\\lambda) W - \\eta\\, s(R, C)\\, X_{\\text{ns\\_steps}}

(the iteration runs on :math:`U^\\top` when :math:`R > C`, so that :math:`A_j` is the
smaller Gram matrix), with :math:`s = \\sqrt{\\max(1, R/C)}` (``adjust_lr="original"``)
or :math:`s = 0.2 \\sqrt{\\max(R, C)}` (``"match_rms_adamw"``). Weights that are not
matrices (fewer than two axes) and the indices named in ``fallback_indices`` are
updated by the ``fallback`` optimizer instead (AdamW by default).

Three passes per matrix: a fused kernel updates :math:`B`, writes :math:`U` to a
temporary and sums :math:`U^2` in float64 (fixed blocks, so the norm does not depend
on the thread count); the Newton-Schulz products on the array's own backend (NumPy's
BLAS, or CuPy's cuBLAS) in the weight's dtype; a kernel applies the decay and the step.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from mxopt.core.checks import check_integer, shown, to_float, to_int
from mxopt.core.fields import choice, flag, hyperparameter
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.matrix import MatrixOptimizer, fallback_indices_option, fallback_option
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["Muon", "MuonOptions", "newton_schulz"]

#: The state array of a matrix weight (torch's name); a weight without it is the fallback's.
MOMENTUM = "momentum_buffer"
#: ``adjust_lr``'s values: the learning-rate factor of an R x C matrix.
ADJUST_LR = {
    "original": lambda rows, cols: math.sqrt(max(1.0, rows / cols)),
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),
}


def muon_momentum_element(
    i, w, g, momentum_buffer, update, rescale, clip, momentum, one_minus_momentum,
    grad_weight, buffer_weight,
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    b = momentum * momentum_buffer[i] + one_minus_momentum * gi
    momentum_buffer[i] = b
    u = grad_weight * gi + buffer_weight * b
    update[i] = u
    return np.float64(u) * np.float64(u), np.float64(u) * np.float64(u)


#: Momentum, the update to orthogonalize (into a temporary) and its sum of squares (twice:
#: a reducing kernel sums a pair).
MUON_MOMENTUM_KERNEL = Kernel(
    name="muon_momentum",
    state=("momentum_buffer", "update"),
    cpu=muon_momentum_element,
    reduces=True,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T b = momentum * momentum_buffer[i] + one_minus_momentum * gi;
    momentum_buffer[i] = b;
    const T u = grad_weight * gi + buffer_weight * b;
    update[i] = u;
    return mx_pair{(double)u * (double)u, (double)u * (double)u};
""",
)


def muon_step_element(i, w, g, orthogonal, decay, lr):
    w[i] = w[i] * decay - lr * orthogonal[i]


#: The decoupled decay and the step along the orthogonalized update.
MUON_STEP_KERNEL = Kernel(
    name="muon_step",
    state=("orthogonal",),
    cpu=muon_step_element,
    cuda="""
    w[i] = w[i] * decay - lr * orthogonal[i];
""",
)


def newton_schulz(x, norm: float, coefficients: tuple, steps: int, epsilon: float):
    """``steps`` quintic Newton-Schulz iterations on the matrix ``x`` (NumPy or CuPy,
    overwritten), whose Frobenius norm is ``norm``; returns the result, of ``x``'s shape,
    dtype and backend (C-contiguous).

    ``x`` is first divided by ``max(norm, epsilon)``; then ``X <- a X + (b A + c A^2) X``
    with ``A = X X^T`` when ``x`` has no more rows than columns, else the same on
    ``X^T`` written without transposing: ``X <- a X + X (b A + c A^2)``, ``A = X^T X``.
    Every product is a ``dot`` in ``x``'s dtype.
    """
    a, b, c = coefficients
    x /= max(norm, epsilon)
    wide = x.shape[0] <= x.shape[1]
    for _ in range(steps):
        gram = x.dot(x.T) if wide else x.T.dot(x)
        poly = gram.dot(gram)
        poly *= c
        gram *= b
        poly += gram
        step = poly.dot(x) if wide else x.dot(poly)
        x *= a
        x += step
    return x


def _check_coefficients(instance, attribute, value):
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError(
            f"Muon: ns_coefficients must be a tuple of three numbers (a, b, c), got {shown(value)}"
        )
    for number in value:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"Muon: ns_coefficients must hold three numbers, got {shown(value)}")
        if not math.isfinite(number):
            raise ValueError(
                f"Muon: ns_coefficients must hold three finite numbers, got {shown(value)}"
            )


def _to_coefficients(value):
    return tuple(map(to_float, value)) if isinstance(value, (list, tuple)) else value


def _check_ns_steps(instance, attribute, value):
    check_integer("Muon", attribute.name, value, 0)
    if value > 99:
        raise ValueError(
            f"Muon: ns_steps must be an integer from 0 to 99 (each is three matrix products), "
            f"got {shown(value)}"
        )


@options
class MuonOptions(AbstractOptimizerOptions):
    """Options of :class:`Muon` (defaults from torch.optim.Muon)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    momentum: float = hyperparameter(0.95, ge=0.0, lt=1.0, doc="decay of the momentum buffer")
    nesterov: bool = flag(True, doc="orthogonalize (1-mu) g + mu B instead of B")
    ns_steps: int = attrs.field(
        default=5,
        converter=to_int,
        validator=_check_ns_steps,
        metadata={"doc": "Newton-Schulz iterations (0 to 99)", "integer_ge": 0},
    )
    ns_coefficients: tuple = attrs.field(
        default=(3.4445, -4.7750, 2.0315),
        converter=_to_coefficients,
        validator=_check_coefficients,
        metadata={"doc": "(a, b, c) of the quintic iteration"},
    )
    epsilon: float = hyperparameter(
        1e-7, gt=0.0, doc="floor of the Frobenius norm the update is divided by"
    )
    adjust_lr: str = choice(
        "original",
        tuple(ADJUST_LR),
        doc="'original' (sqrt(max(1, R/C))) or 'match_rms_adamw' (0.2 sqrt(max(R, C)))",
    )
    fallback: AbstractOptimizer | None = fallback_option(MOMENTUM)
    fallback_indices: tuple = fallback_indices_option()
    weight_decay: float = hyperparameter(
        0.1, ge=0.0, doc="decoupled decay: W *= 1 - lr * weight_decay (unadjusted lr)"
    )


@register
class Muon(MatrixOptimizer):
    """Muon (Jordan et al. 2024): momentum orthogonalized by Newton-Schulz, for matrices.

    ``Muon(*, lr=1e-3, momentum=0.95, nesterov=True, ns_steps=5,
    ns_coefficients=(3.4445, -4.775, 2.0315), epsilon=1e-7, adjust_lr="original",
    fallback=AdamW(), fallback_indices=(), grad_clip=0.0, weight_decay=0.1,
    grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Keller Jordan, Yuchen Jin, Vlado Boza, Jiacheng You, Franz Cesista, Laker Newhouse,
    Jeremy Bernstein, "Muon: An optimizer for hidden layers in neural networks", 2024,
    https://kellerjordan.github.io/posts/muon/; Jingyuan Liu et al., "Muon is Scalable
    for LLM Training", 2025, arXiv:2502.16982 (the ``"match_rms_adamw"`` scale). For a
    weight of shape ``(R, ...)`` seen as an ``R x C`` matrix, with :math:`g =
    \\pm\\operatorname{clip}(\\nabla \\cdot \\text{grad\\_scale}/\\text{batch\\_size})`
    (no L2 term):

    .. math::

        B \\leftarrow \\mu B + (1-\\mu) g, \\qquad
        U = (1-\\mu) g + \\mu B \\ \\text{(nesterov; else } U = B), \\\\
        W \\leftarrow (1-\\eta\\lambda) W - \\eta\\, s(R, C)\\,
        \\mathrm{NS}^{(a,b,c)}_{k}\\big(U / \\max(\\lVert U\\rVert_F, \\epsilon)\\big)

    where :math:`\\mathrm{NS}_k` is ``ns_steps`` iterations of :math:`X \\leftarrow a X +
    (b A + c A^2) X`, :math:`A = X X^\\top`, on :math:`X` (or on :math:`X^\\top` when
    :math:`R > C`), which takes the singular values of :math:`X` near 1 (roughly into
    [0.7, 1.2] with the default coefficients: not an exact orthogonalization, by
    design). :math:`s = \\sqrt{\\max(1, R/C)}` with ``adjust_lr="original"`` (Jordan's
    scale), :math:`s = 0.2\\sqrt{\\max(R, C)}` with ``"match_rms_adamw"`` (Liu et al.: the
    update's RMS then matches AdamW's, so AdamW's lr and decay carry over). The decay
    uses the unadjusted :math:`\\eta`. The lr multiplier of a parameter group scales
    both. No bias correction: the update does not depend on the step count.

    Matrices are the weights with two or more axes (``(shape[0], -1)``: a conv kernel
    ``(out, in, kh, kw)`` is an ``out x (in*kh*kw)`` matrix). The others (biases, norm
    gains, scalars) and the indices named in ``fallback_indices`` (exact indices, or
    glob patterns such as ``"*embed*"`` matched against ``str(index)``; the embeddings
    and the output head, as the papers advise) are updated by ``fallback``, an
    optimizer with its own options (``AdamW()`` by default: its lr, decay, clipping,
    scale and schedule, not Muon's); multipliers of parameter groups, global-norm
    clipping and loss scaling act on both. With ``fallback=None`` such a weight is an
    error naming its index, raised before anything is written.

    Precision: the momentum kernel and the step kernel compute in the weight's dtype,
    the norm is a float64 sum. The Newton-Schulz products run on the weight's backend
    (NumPy/BLAS on the CPU, CuPy/cuBLAS on the GPU) in the weight's dtype: float32 for
    float32 weights, float64 for float64 weights (the array's dtype, as every mxopt
    kernel). torch runs them in bfloat16, a GPU throughput choice that NumPy has no
    fast products for; float32 costs the same on a CPU and keeps the update within
    about 2e-6 (RMS, relative; 5e-6 at worst) of the float64 iteration, where
    torch's bfloat16 one is off by about 1e-2. CuPy's float32 products use TF32 only with
    ``CUPY_TF32=1``. Each iteration allocates ``X X^T``, its square and the next ``X``; with
    the update, the temporaries of a step are about ``2 R C + 2 \\min(R, C)^2`` elements.

    State: ``"momentum_buffer"`` (:math:`B`), 4 bytes per float32 parameter of a
    matrix (half of AdamW's); the weights of the fallback keep its state (8 bytes for
    AdamW).

    Equivalents, with ``batch_size=1``: ``torch.optim.Muon(params, lr, weight_decay,
    momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn)`` for 2-D
    weights is ``Muon(lr=lr, weight_decay=weight_decay, momentum=momentum,
    nesterov=nesterov, ns_coefficients=ns_coefficients, epsilon=eps,
    ns_steps=ns_steps, adjust_lr=adjust_lr_fn or "original")``: the defaults are
    torch's, and the results agree up to torch's bfloat16 iteration (exactly, within
    float32 rounding, when torch's iteration runs in float32). torch refuses the other
    weights; pair it with ``torch.optim.AdamW`` on them, which ``fallback=AdamW(...)``
    is.
    """

    Options = MuonOptions
    about = About(
        family="recent",
        same_as="`torch.optim.Muon` on matrices (2-D weights); others go to the `fallback`",
        weight_decay="decoupled: `W *= 1 - lr * weight_decay` (lr not adjusted)",
        epsilon="floors the Frobenius norm of the update",
        examples=({},),
    )
    matrix_marker = MOMENTUM  # a weight without it is the fallback's

    def matrix_state_spec(self, shape) -> dict:
        return {MOMENTUM: 0.0}

    # -- the step -----------------------------------------------------------------------------

    def kernel(self) -> Kernel:
        return MUON_MOMENTUM_KERNEL

    def kernel_scalars(self, v, step, memory):
        nesterov = v.nesterov
        return {  # the decay never enters g
            "rescale": v.rescale, "clip": v.grad_clip,
            "momentum": v.momentum, "one_minus_momentum": 1.0 - v.momentum,
            "grad_weight": 1.0 - v.momentum if nesterov else 0.0,
            "buffer_weight": v.momentum if nesterov else 1.0,
            "decay": 1.0 - v.lr * v.weight_decay, "lr": v.lr,
            # for the iteration and the lr factor, read here with the rest of the step
            "epsilon": v.epsilon, "ns_steps": v.ns_steps, "ns_coefficients": v.ns_coefficients,
            "adjust_lr": v.adjust_lr,
        }  # fmt: skip

    def apply_matrix(self, backend, xp, w, g, arrays, x, rows, cols, check) -> int:
        update = xp.empty(w.size, dtype=w.dtype)
        state = (arrays.flat[MOMENTUM], update)
        scalars = MUON_MOMENTUM_KERNEL.pack(x)
        bad, squares, _ = backend.run(MUON_MOMENTUM_KERNEL, w, g, state, scalars, check)
        if bad:
            return bad
        orthogonal = newton_schulz(update.reshape(rows, cols), math.sqrt(squares),
                                   x["ns_coefficients"], x["ns_steps"], x["epsilon"])  # fmt: skip
        lr = x["lr"] * ADJUST_LR[x["adjust_lr"]](rows, cols)
        step = (orthogonal.reshape(-1),)
        backend.run(MUON_STEP_KERNEL, w, g, step, MUON_STEP_KERNEL.pack({**x, "lr": lr}), False)
        return 0
