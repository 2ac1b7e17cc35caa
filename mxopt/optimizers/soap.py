"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., "SOAP: Improving
and Stabilizing Shampoo using Adam", 2024, arXiv:2409.11321; reference code:
github.com/nikhilvyas/SOAP).

For a weight seen as an ``R x C`` matrix (``shape[0]`` rows, the other axes flattened into
the columns), with :math:`G` the clipped, rescaled gradient (no L2 term: the decay is
decoupled), Shampoo's factors :math:`L \\approx E[G G^\\top]`, :math:`R \\approx E[G^\\top
G]` (running means with :math:`\\beta_s`) and :math:`Q_L, Q_R` estimates of their
eigenvectors, update :math:`t` (counted from the update after the first) is Adam run on
the rotated gradient :math:`G' = Q_L^\\top G Q_R`:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) G, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) G'^2 \\\\
    W &\\leftarrow W - \\eta \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}\\,
        Q_L \\frac{Q_L^\\top m Q_R}{\\sqrt{v} + \\epsilon} Q_R^\\top, \\qquad
    W \\leftarrow W - \\eta\\lambda W \\\\
    L &\\leftarrow \\beta_s L + (1-\\beta_s) G G^\\top, \\qquad
    R \\leftarrow \\beta_s R + (1-\\beta_s) G^\\top G

and every ``precondition_frequency`` updates :math:`Q_L, Q_R` take one power iteration
(:math:`Q \\leftarrow \\operatorname{qr}(L Q)`). A weight's first update only sets up
:math:`L, R` and their eigenvectors (``eigh``). Weights that are not matrices, and the
indices named in ``fallback_indices``, are updated by the ``fallback`` optimizer
(AdamW by default), as with :class:`~mxopt.Muon`.

A step of a matrix: a kernel writes :math:`G` to a temporary and updates :math:`m`; the
rotations are matrix products on the weight's backend (NumPy's BLAS or CuPy's cuBLAS) in
its dtype; a kernel updates :math:`v` and divides the rotated momentum; a kernel applies
the step and the decay; then products update :math:`L, R`, and ``eigh`` or ``qr``
(LAPACK, or cuSOLVER) refresh the bases when due.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag, hyperparameter, integer
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.matrix import MatrixOptimizer, fallback_indices_option, fallback_option
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["SOAP", "SOAPOptions", "complete_basis", "eigenbasis", "qr_positive"]

#: Added to the diagonal of L and R before ``eigh``, as the reference does.
DIAGONAL_SHIFT = 1e-30


def soap_gradient_element(
    i, w, g, exp_avg, gradient, rescale, clip, beta1, one_minus_beta1
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    gradient[i] = gi
    exp_avg[i] = beta1 * exp_avg[i] + one_minus_beta1 * gi


#: The gradient G into a temporary, and the momentum m (left as it is, with beta1 = 1 and
#: one_minus_beta1 = 0, on the update that only sets up the preconditioner).
SOAP_GRADIENT_KERNEL = Kernel(
    name="soap_gradient",
    state=("exp_avg", "gradient"),
    cpu=soap_gradient_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    gradient[i] = gi;
    exp_avg[i] = beta1 * exp_avg[i] + one_minus_beta1 * gi;
""",
)


def soap_adam_element(
    i, w, g, exp_avg_sq, rotated_grad, rotated_avg, beta2, one_minus_beta2, epsilon
):  # fmt: skip
    r = rotated_grad[i]
    v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (r * r)
    exp_avg_sq[i] = v
    rotated_avg[i] = rotated_avg[i] / (np.sqrt(v) + epsilon)


#: Adam in the rotated space: v from G', and the rotated momentum divided by sqrt(v) + eps
#: (in place).
SOAP_ADAM_KERNEL = Kernel(
    name="soap_adam",
    state=("exp_avg_sq", "rotated_grad", "rotated_avg"),
    cpu=soap_adam_element,
    cuda="""
    const T r = rotated_grad[i];
    const T v = beta2 * exp_avg_sq[i] + one_minus_beta2 * (r * r);
    exp_avg_sq[i] = v;
    rotated_avg[i] = rotated_avg[i] / (sqrt(v) + epsilon);
""",
)


def soap_step_element(i, w, g, update, step_size, decay):
    w[i] = (w[i] - step_size * update[i]) * decay


#: The step along the update rotated back, then the decoupled decay (the reference decays
#: the weight after its step).
SOAP_STEP_KERNEL = Kernel(
    name="soap_step",
    state=("update",),
    cpu=soap_step_element,
    cuda="""
    w[i] = (w[i] - step_size * update[i]) * decay;
""",
)


# -- the bases --------------------------------------------------------------------------------


def _host(array) -> np.ndarray:
    """A (small) array on the host: a CuPy array copied, a NumPy array as it is."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def qr_positive(a, xp):
    """``(Q, d)``: the orthonormal factor of ``a = Q R`` (reduced) with a non-negative
    diagonal ``d`` in R (on the host), which makes it unique for a matrix of full column
    rank."""
    q, r = xp.linalg.qr(a)
    diagonal = r.reshape(-1)[:: r.shape[1] + 1]
    signs = (diagonal < 0).astype(q.dtype)
    signs *= -2
    signs += 1
    q *= signs
    return q, np.abs(_host(diagonal))


def _rank_level(n: int, dtype) -> float:
    """What counts as rounding noise, relative to the largest eigenvalue (or diagonal of R)
    of an ``n x n`` factor: ``n eps`` (numpy.linalg.matrix_rank's tolerance)."""
    return n * float(np.finfo(dtype).eps)


def complete_basis(kept, out, xp) -> None:
    """``kept`` (``n x k``, orthonormal columns) into ``out[:, :k]``, and a fixed
    orthonormal basis of its orthogonal complement into ``out[:, k:]``: the ``n - k`` unit
    vectors least in the span of ``kept`` (the smallest sums of squares of its rows, ties
    by position), in order of position, projected off that span and orthonormalised (QR).
    """
    n, k = kept.shape
    out[:, :k] = kept
    if k == n:
        return
    weights = _host((kept * kept).sum(axis=1))
    outside = np.sort(np.argsort(weights, kind="stable")[: n - k])
    at = xp.asarray(outside)
    units = -kept.dot(kept[at, :].T)  # e_j projected off the kept span, j in outside
    units[at, xp.arange(n - k)] += 1
    out[:, k:] = qr_positive(units, xp)[0]


def eigenbasis(matrix, out, xp) -> None:
    """The eigenvectors of the symmetric ``matrix`` + 1e-30 I, by descending eigenvalue,
    into ``out`` (both ``n x n``, of ``xp``).

    Made unique, so that the bases (and the whole trajectory) do not depend on the
    LAPACK or cuSOLVER at hand: each eigenvector is signed so that its entry of largest
    magnitude is positive; the eigenvectors of eigenvalues at most ``n eps lambda_max``
    (``eps`` of the dtype: rounding level, such as the null space of :math:`G G^\\top`
    for a non-square G, whose basis ``eigh`` draws from rounding errors) are replaced by
    the fixed basis of :func:`complete_basis`.
    """
    n = matrix.shape[0]
    shifted = matrix.copy()
    shifted.reshape(-1)[:: n + 1] += DIAGONAL_SHIFT
    values, vectors = xp.linalg.eigh(shifted)  # ascending
    values = _host(values)[::-1]
    k = max(1, int((values > _rank_level(n, matrix.dtype) * float(values[0])).sum()))
    kept = vectors[:, ::-1][:, :k]
    top = xp.argmax(xp.abs(kept), axis=0)
    largest = kept[top, xp.arange(k)]
    complete_basis(kept * (largest / xp.abs(largest)), out, xp)  # exactly +-1 per column


def _refresh(precond, basis, v, axis: int, xp) -> None:
    """Sort ``basis`` by its estimated eigenvalues ``diag(Q^T L Q)``, descending (and ``v``'s
    ``axis`` alike), then one power iteration: ``Q = qr(L Q)``. The columns from the first
    whose diagonal in R is at rounding level on (``L`` rank-deficient: directions no
    gradient has had yet, whose QR columns are rounding noise) take the fixed basis of
    :func:`complete_basis`."""
    n = basis.shape[0]
    power = precond.dot(basis)
    estimate = _host((basis * power).sum(axis=0))
    order = np.argsort(-estimate, kind="stable")
    if (order != np.arange(n)).any():
        at = xp.asarray(order)
        v[...] = v[at, :] if axis == 0 else v[:, at]
        power = power[:, at]  # L (Q P) = (L Q) P
    q, diagonal = qr_positive(power, xp)
    noise = np.flatnonzero(diagonal <= _rank_level(n, basis.dtype) * diagonal.max())
    if noise.size:
        complete_basis(q[:, : int(noise[0])], basis, xp)
    else:
        basis[...] = q


# -- options and optimizer --------------------------------------------------------------------


@options
class SOAPOptions(AbstractOptimizerOptions):
    """Options of :class:`SOAP` (defaults from the reference code)."""

    lr: float = hyperparameter(3e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.95, ge=0.0, lt=1.0, doc="decay of the momentum m")
    beta2: float = hyperparameter(
        0.95, ge=0.0, lt=1.0, doc="decay of the second moment v (in the rotated space)"
    )
    shampoo_beta: float = hyperparameter(
        0.0, ge=0.0, lt=1.0, doc="decay of the factors L and R; 0: beta2 (the reference's default)"
    )
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to sqrt(v)")
    precondition_frequency: int = integer(
        10, ge=1, doc="updates between two refreshes (power iteration + QR) of the bases"
    )
    max_precond_dim: int = integer(
        10000, ge=0, doc="a side (rows or columns) larger than this is not rotated"
    )
    bias_correction: bool = flag(True, doc="Adam's bias corrections of m and v")
    fallback: AbstractOptimizer | None = fallback_option("exp_avg")
    fallback_indices: tuple = fallback_indices_option()
    weight_decay: float = hyperparameter(
        0.01, ge=0.0, doc="decoupled decay: W -= lr * weight_decay * W, after the step"
    )


@register
class SOAP(MatrixOptimizer):
    """SOAP (Vyas et al. 2024): Adam in the eigenbasis of Shampoo's preconditioner.

    ``SOAP(*, lr=3e-3, beta1=0.95, beta2=0.95, shampoo_beta=0.0, epsilon=1e-8,
    precondition_frequency=10, max_precond_dim=10000, bias_correction=True,
    fallback=AdamW(), fallback_indices=(), grad_clip=0.0, weight_decay=0.01,
    grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Nikhil Vyas, Depen Morwani, Rosie Zhao, Mujin Kwun, Itai Shapira, David Brandfonbrener,
    Lucas Janson, Sham Kakade, "SOAP: Improving and Stabilizing Shampoo using Adam", 2024,
    arXiv:2409.11321 (Algorithms 1 to 3), as its reference code (nikhilvyas/SOAP) computes
    it. For a weight of shape ``(R, ...)`` seen as an ``R x C`` matrix, with :math:`G =
    \\pm\\operatorname{clip}(\\nabla \\cdot \\text{grad\\_scale}/\\text{batch\\_size})` (no
    L2 term) and :math:`\\beta_s` = ``shampoo_beta`` (``beta2`` when 0), the first update
    of the weight only sets up the preconditioner, without moving the weight:

    .. math::

        L = (1-\\beta_s) G G^\\top, \\quad R = (1-\\beta_s) G^\\top G, \\quad
        Q_L, Q_R = \\operatorname{eigh}(L + 10^{-30} I), \\operatorname{eigh}(R + 10^{-30} I)

    (eigenvectors by descending eigenvalue). Update :math:`t = 1, 2, \\ldots` after it:

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) G, \\qquad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) (Q_L^\\top G Q_R)^2 \\\\
        W &\\leftarrow W - \\eta \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}\\,
            Q_L \\frac{Q_L^\\top m Q_R}{\\sqrt{v}+\\epsilon} Q_R^\\top, \\qquad
        W \\leftarrow W - \\eta\\lambda W \\\\
        L &\\leftarrow \\beta_s L + (1-\\beta_s) G G^\\top, \\qquad
        R \\leftarrow \\beta_s R + (1-\\beta_s) G^\\top G

    :math:`m` lives in the original space, :math:`v` in the rotated one. The bias
    correction is left out with ``bias_correction=False``; the decay uses the lr
    (scheduled, times the group's multiplier) without it, after the step. When :math:`t`
    is a multiple of ``precondition_frequency`` the bases are refreshed, side by side:
    the columns of :math:`Q` are sorted by :math:`\\operatorname{diag}(Q^\\top L Q)`,
    descending (and :math:`v`'s rows, or columns for :math:`Q_R`, alike), then one power
    iteration :math:`Q \\leftarrow \\operatorname{qr}(L Q)`. A side longer than
    ``max_precond_dim`` keeps no :math:`L`/:math:`Q` and is not rotated (both sides: Adam
    with SOAP's first update). Each of these steps is the paper's (Algorithm 3, with
    Algorithm 2's refresh and Algorithm 1's Adam in the rotated space) as the reference
    code orders them: the factors take the gradient after the step, so a step never uses
    its own gradient in its rotation.

    Where mxopt pins down what ``eigh`` and ``qr`` leave open. Signs, which do not change
    the update (a column's sign flips the rotated gradient and momentum alike, and the
    rotation back undoes it): each QR factor has a non-negative diagonal in R, each
    eigenvector's entry of largest magnitude is positive. Subspaces without a basis of
    their own, which do change it (:math:`v` is elementwise in the basis): the
    eigenvectors of eigenvalues at most :math:`n\\,\\epsilon_{\\text{dtype}}\\lambda_{\\max}`
    (the null space of :math:`G G^\\top` when G is not square: at the first update of
    every non-square matrix), and at a refresh the QR columns from the first whose
    diagonal in R is that small (an :math:`L` that is still rank-deficient, such as a
    ``(1, C)`` weight's before C updates), are rounding noise in ``eigh`` and ``qr``,
    and so in the reference; mxopt replaces them by a fixed orthonormal basis of the
    same subspace (:func:`complete_basis`). So a trajectory does not depend on the
    LAPACK or cuSOLVER at hand, and float32 runs follow float64 ones (where
    pytorch-optimizer's SOAP, which follows the reference, and mxopt part by about a
    tenth of the path on non-square matrices).

    Differences from the reference code: weights of more than two axes are ``(R, -1)``
    matrices (the reference rotates every axis, or merges axes with ``merge_dims``);
    vectors go to ``fallback`` (the reference runs Adam on them with SOAP's options and
    first update, or rotates them with ``precondition_1d``); no ``normalize_grads`` and
    no ``data_format``.

    Matrices are the weights with two or more axes; the others (biases, norm gains,
    scalars) and the indices named in ``fallback_indices`` (exact indices, or glob
    patterns matched against ``str(index)``) are updated by ``fallback``, an optimizer
    with its own options (``AdamW()`` by default); with ``fallback=None`` such a weight
    is an error naming its index, raised before anything is written. See
    :class:`~mxopt.Muon` for the routing.

    Precision: every array of a matrix, the factors and bases included, is in the
    weight's dtype, and so are the products, ``eigh`` and ``qr`` (float32 for float32
    weights, as the reference; float64 ones get float64 bases, as every mxopt
    computation follows the array's dtype). A step holds up to five temporaries of the
    weight's size at once, and two of each rotated side's ``n x n``; a refresh, or the first
    update, also the workspace of ``qr`` or ``eigh`` (:math:`O(n^3)` time for a side of
    ``n``: keep ``max_precond_dim`` within what the machine can decompose every
    ``precondition_frequency`` updates).

    State: ``"exp_avg"`` (:math:`m`) and ``"exp_avg_sq"`` (:math:`v`), shaped like the
    weight; ``"precond_left"`` (:math:`L`) and ``"basis_left"`` (:math:`Q_L`), ``R x R``;
    ``"precond_right"`` (:math:`R`) and ``"basis_right"`` (:math:`Q_R`), ``C x C`` (a
    side longer than ``max_precond_dim`` has neither): ``4 (2 + 2R/C + 2C/R)`` bytes
    per float32 parameter of an ``R x C`` matrix, 28 bytes per float32 parameter for a
    (64, 32) matrix (8 for Adam; the factors dominate for unbalanced shapes). The weights
    of the fallback keep its state (8 bytes for AdamW).

    Equivalents, with ``batch_size=1``: the reference ``SOAP(params, lr, betas=(beta1,
    beta2), shampoo_beta, eps, weight_decay, precondition_frequency, max_precond_dim,
    merge_dims=False, precondition_1d=False, normalize_grads=False, correct_bias)`` on 2-D
    weights is ``SOAP(lr=lr, beta1=beta1, beta2=beta2, shampoo_beta=shampoo_beta if
    shampoo_beta >= 0 else 0.0, epsilon=eps, weight_decay=weight_decay,
    precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
    bias_correction=correct_bias)``; the defaults are the reference's (its
    ``shampoo_beta=-1`` means ``beta2``, mxopt's 0 does; an exact 0, factors from the
    last gradient alone, cannot be asked for: give a tiny value). pytorch-optimizer's
    ``SOAP(lr, betas, shampoo_beta, weight_decay, precondition_frequency,
    max_precondition_dim, correct_bias, eps, maximize)`` is the same update
    (``shampoo_beta=None`` is mxopt's 0); the two agree within float32 rounding on square
    matrices and with one side rotated (``tests/test_soap.py``), and part on the null
    space of other matrices' first update, as said above.
    """

    Options = SOAPOptions
    about = About(
        family="recent",
        same_as="the reference SOAP (nikhilvyas/SOAP) on matrices; others go to the `fallback`",
        weight_decay="decoupled, after the step: `W -= lr * weight_decay * W`",
        epsilon="added to `sqrt(v)` in the rotated space",
        examples=({},),
    )
    matrix_marker = "exp_avg"

    def kernel(self) -> Kernel:
        return SOAP_GRADIENT_KERNEL

    def matrix_state_spec(self, shape: tuple) -> dict:
        rows = shape[0]
        cols = int(np.prod(shape[1:]))
        spec = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        limit = self.opts.max_precond_dim
        for side, n in (("left", rows), ("right", cols)):
            if n <= limit:
                spec[f"precond_{side}"] = ((n, n), 0.0)
                spec[f"basis_{side}"] = ((n, n), 0.0)
        return spec

    def kernel_scalars(self, v, step, memory):
        t = step - 1  # the first update (t = 0) only sets up the preconditioner
        start = t == 0
        step_size = v.lr
        if v.bias_correction and not start:
            step_size *= (1.0 - v.beta2**t) ** 0.5 / (1.0 - v.beta1**t)
        shampoo_beta = v.shampoo_beta or v.beta2
        return {
            "rescale": v.rescale, "clip": v.grad_clip,  # the decay never enters G
            "beta1": 1.0 if start else v.beta1, "one_minus_beta1": 0.0 if start else 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2, "epsilon": v.epsilon,
            "step_size": step_size, "decay": 1.0 - v.lr * v.weight_decay,
            "shampoo_beta": shampoo_beta, "one_minus_shampoo_beta": 1.0 - shampoo_beta,
            "start": start, "refresh": t > 0 and t % v.precondition_frequency == 0,
        }  # fmt: skip

    def apply_matrix(self, backend, xp, w, g, arrays, x, rows, cols, check) -> int:
        flat = arrays.flat
        gradient = xp.empty(w.size, dtype=w.dtype)
        state = (flat["exp_avg"], gradient)
        bad = backend.run(SOAP_GRADIENT_KERNEL, w, g, state, SOAP_GRADIENT_KERNEL.pack(x), check)
        if bad:
            return bad
        grad = gradient.reshape(rows, cols)
        left = _side(flat, "left", rows)
        right = _side(flat, "right", cols)
        if not x["start"]:
            exp_avg = flat["exp_avg"].reshape(rows, cols)
            rotated_grad = _rotate(grad, left, right, False)
            rotated_avg = _rotate(exp_avg, left, right, False)
            if rotated_avg is exp_avg:  # no side rotated: the kernel must not write m
                rotated_avg = exp_avg.copy()
            state = (flat["exp_avg_sq"], rotated_grad.reshape(-1), rotated_avg.reshape(-1))
            backend.run(SOAP_ADAM_KERNEL, w, g, state, SOAP_ADAM_KERNEL.pack(x), False)
            update = xp.ascontiguousarray(_rotate(rotated_avg, left, right, True))
            step = (update.reshape(-1),)
            backend.run(SOAP_STEP_KERNEL, w, g, step, SOAP_STEP_KERNEL.pack(x), False)
        beta, one_minus_beta = x["shampoo_beta"], x["one_minus_shampoo_beta"]
        for side, outer in ((left, lambda: grad.dot(grad.T)), (right, lambda: grad.T.dot(grad))):
            if side is None:
                continue
            precond, basis = side
            product = outer()
            product *= one_minus_beta
            precond *= beta
            precond += product
            if x["start"]:
                eigenbasis(precond, basis, xp)
        if x["refresh"]:
            v = flat["exp_avg_sq"].reshape(rows, cols)
            for axis, side in enumerate((left, right)):
                if side is not None:
                    _refresh(*side, v, axis, xp)
        return 0


def _side(flat: dict, side: str, n: int):
    """``(L, Q)`` of a rotated side, as ``n x n`` views of the state; None when unrotated."""
    if f"basis_{side}" not in flat:
        return None
    return flat[f"precond_{side}"].reshape(n, n), flat[f"basis_{side}"].reshape(n, n)


def _rotate(a, left, right, back: bool):
    """``Q_L^T a Q_R``, or ``Q_L a Q_R^T`` with ``back``, each side where one is rotated
    (``a`` itself when none is)."""
    if left is not None:
        q = left[1]
        a = (q if back else q.T).dot(a)
    if right is not None:
        q = right[1]
        a = a.dot(q.T if back else q)
    return a
