"""Rprop: resilient backpropagation (Riedmiller & Braun, "A direct adaptive method for
faster backpropagation learning: the RPROP algorithm", IEEE ICNN 1993), in
torch.optim.Rprop's variant.

Every element has its own step size :math:`\\Delta` (state ``"step_size"``,
starting at the learning rate) and only the *sign* of the gradient moves the
weight. With :math:`g` the :func:`~mxopt.normalized_gradient` and
:math:`g_{prev}` the previous one (state ``"prev"``, starting at 0), per
element:

.. math::

    \\Delta &\\leftarrow \\operatorname{clip}\\left(\\Delta \\cdot
        \\begin{cases} \\eta_+ & g\\, g_{prev} > 0 \\\\ \\eta_- & g\\, g_{prev} < 0 \\\\
        1 & \\text{otherwise} \\end{cases},\\ \\Delta_{min}, \\Delta_{max}\\right) \\\\
    g &\\leftarrow 0 \\quad \\text{if } g\\, g_{prev} < 0 \\\\
    W &\\leftarrow W - \\operatorname{sign}(g)\\, \\Delta, \\qquad g_{prev} \\leftarrow g

After a sign change the weight stays put and the stored gradient is 0, so the
next step neither grows nor shrinks the step size: no weight backtracking,
the variant Igel & Huesken ("Improving the Rprop learning algorithm", 2000)
call iRprop-.
"""

from __future__ import annotations

from mxopt.core.checks import shown
from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["Rprop", "RpropOptions"]


def rprop_element(
    i, w, g, prev, step_size, rescale, clip, wd, etaminus, etaplus, step_min, step_max
):
    # Every array is stored once, unconditionally, with values chosen by conditional
    # expressions: LLVM turns those into selects, and the loop keeps no branch that would
    # hold Numba's reference counting of the arrays inside it (with stores in branches the
    # step ran 25x slower). Each stored value is one of the branches' values exactly.
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    product = gi * prev[i]
    step = step_size[i]
    step = step * etaplus if product > 0 else (step * etaminus if product < 0 else step)
    # Clamped at every update, as torch does: an lr outside the bounds is pulled in.
    step = step_min if step < step_min else step
    step = step_max if step > step_max else step
    step_size[i] = step
    reversed_sign = product < 0
    prev[i] = 0 if reversed_sign else gi
    wi = w[i]
    moves = (gi > 0 or gi < 0) and not reversed_sign  # not for a zero or NaN gradient
    w[i] = (wi - step if gi > 0 else wi + step) if moves else wi


RPROP_KERNEL = Kernel(
    name="rprop",
    state=("prev", "step_size"),
    cpu=rprop_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T product = gi * prev[i];
    T step = step_size[i];
    if (product > T(0)) step = step * etaplus;
    else if (product < T(0)) step = step * etaminus;
    if (step < step_min) step = step_min;
    if (step > step_max) step = step_max;
    step_size[i] = step;
    if (product < T(0)) {
        prev[i] = T(0);
    } else {
        prev[i] = gi;
        if (gi > T(0)) w[i] = w[i] - step;
        else if (gi < T(0)) w[i] = w[i] + step;
    }
""",
)


@options
class RpropOptions(AbstractOptimizerOptions):
    """Options of :class:`Rprop` (defaults as torch.optim.Rprop)."""

    lr: float = hyperparameter(
        0.01, gt=0.0, doc="initial step size of every element (read once, at state creation)"
    )
    etaminus: float = hyperparameter(
        0.5, gt=0.0, lt=1.0, doc="step-size factor after a gradient sign change"
    )
    etaplus: float = hyperparameter(
        1.2, gt=1.0, doc="step-size factor while the gradient keeps its sign"
    )
    step_min: float = hyperparameter(1e-6, ge=0.0, doc="smallest step size")
    step_max: float = hyperparameter(50.0, ge=0.0, doc="largest step size (>= step_min)")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="coupled L2 coefficient lambda")


@register
class Rprop(AbstractOptimizer):
    """Resilient backpropagation: per-element step sizes driven by gradient signs.

    ``Rprop(*, lr=0.01, etaminus=0.5, etaplus=1.2, step_min=1e-6, step_max=50.0,
    grad_clip=0.0, weight_decay=0.0, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Riedmiller & Braun, "A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm" (IEEE ICNN 1993; no arXiv id), in torch's
    variant (iRprop-, Igel & Huesken, "Improving the Rprop learning algorithm",
    2000: no weight backtracking). Per element, with :math:`g` the
    :func:`~mxopt.normalized_gradient` and :math:`s = g\\, g_{prev}`:

    .. math::

        \\Delta &\\leftarrow \\operatorname{clip}(\\Delta\\,\\eta_+, \\Delta_{min},
        \\Delta_{max}) \\text{ if } s > 0, \\quad
        \\operatorname{clip}(\\Delta\\,\\eta_-, \\Delta_{min}, \\Delta_{max}),\\ g
        \\leftarrow 0 \\text{ if } s < 0, \\quad
        \\operatorname{clip}(\\Delta, \\Delta_{min}, \\Delta_{max}) \\text{ else} \\\\
        W &\\leftarrow W - \\operatorname{sign}(g)\\,\\Delta, \\qquad g_{prev}
        \\leftarrow g

    with :math:`\\operatorname{sign}(0) = 0`, :math:`\\eta_\\pm` = ``etaplus``,
    ``etaminus`` and :math:`\\Delta_{min}, \\Delta_{max}` = ``step_min``,
    ``step_max``; ``0 < etaminus < 1 < etaplus`` and ``step_min <= step_max``.
    The learning rate is only the *initial* step size: it is read once, when a
    weight's state is created (from ``lr_scheduler`` if given, at the state of
    that moment), and later changes of ``lr`` or of the schedule do not affect
    existing state, as in torch. With ``maximize`` the sign of :math:`g` (and so
    of :math:`g_{prev}`) is flipped.

    State: ``"prev"`` (:math:`g_{prev}`, starting at 0) and ``"step_size"``
    (:math:`\\Delta`, starting at the learning rate), 8 bytes per float32
    parameter.

    Equivalents: ``weight_decay`` adds :math:`\\lambda W` to :math:`g` (coupled
    L2); it is an mxopt extra, torch.optim.Rprop has no weight decay. With
    ``batch_size=1``, ``weight_decay=0`` and an ``lr`` inside the step bounds this
    is exactly ``torch.optim.Rprop(lr=lr, etas=(etaminus, etaplus),
    step_sizes=(step_min, step_max), maximize=maximize)``, and the defaults are
    torch's; like torch, the step size is clamped to the bounds at every update,
    so an ``lr`` outside them is pulled in at the first update (the paper's and
    torch's formula only clamp after growing or shrinking).
    """

    Options = RpropOptions
    about = About(
        family="others",
        same_as="`torch.optim.Rprop` with `etas=(etaminus, etaplus)`, "
        "`step_sizes=(step_min, step_max)`",
        weight_decay="coupled L2 (an mxopt extra; none by default)",
        epsilon="",
        examples=({},),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        step_min, step_max = self.opts.step_min, self.opts.step_max
        if isinstance(step_min, float) and isinstance(step_max, float):  # schedules: per update
            self._check_step_bounds(step_min, step_max)

    @staticmethod
    def _check_step_bounds(step_min: float, step_max: float) -> None:
        if not step_min <= step_max:
            raise ValueError(
                f"Rprop: step_min must be <= step_max, got step_min={shown(step_min)} "
                f"and step_max={shown(step_max)}"
            )

    def kernel(self) -> Kernel:
        return RPROP_KERNEL

    def initial_state_value(self, name: str) -> float:
        if name != "step_size":
            return 0.0
        if self.opts.lr_scheduler is None and isinstance(self.opts.lr, float):
            return self.opts.lr
        return self.lr_value(self.require_state())

    def kernel_scalars(self, v, step, memory):
        # Options may be reassigned one by one, so the pair is checked at each update.
        self._check_step_bounds(v.step_min, v.step_max)
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "etaminus": v.etaminus,
            "etaplus": v.etaplus, "step_min": v.step_min, "step_max": v.step_max,
        }  # fmt: skip
