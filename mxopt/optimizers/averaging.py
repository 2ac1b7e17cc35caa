"""Weight averaging kept by the updater (Thinc's ``use_averages``, Polyak-Ruppert).

``get_updater(optimizer, averaging=EMA())`` keeps, for every index, a moving
average of the weight (state ``"average"``, starting as a copy of the weight
before its first update). After the ``t``-th update of a weight:

.. math:: \\bar W \\leftarrow \\bar W + r_t (W - \\bar W)

* :class:`EMA`: :math:`r_t = 1 - d_t` with :math:`d_t = \\min(d, \\frac{1 + t}{10 + t})`
  when ``warmup`` (Thinc's rule, so early averages are not dominated by the
  initial weights), else :math:`d_t = d`.
* :class:`Polyak`: :math:`r_t = 1/t`, the plain mean of all iterates
  :math:`W_1 \\dots W_t` (Polyak & Juditsky 1992).

``updater.averaged(weights)`` swaps the averages into the weights for
evaluation and back; ``updater.averages`` maps each index to its average.
"""

from __future__ import annotations

import attrs

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel

__all__ = ["EMA", "Polyak", "AVERAGE_KERNEL", "SWAP_KERNEL"]


def _averaging(cls):
    cls.namespace = "averaging"
    return attrs.frozen(cls)


@_averaging
class EMA:
    """Exponential moving average of the weights, ``decay`` in [0, 1).

    With ``warmup`` (default, as Thinc) the decay after the ``t``-th update is
    ``min(decay, (1 + t) / (10 + t))``.
    """

    decay: float = hyperparameter(0.9999, ge=0.0, lt=1.0, schedulable=False)
    warmup: bool = flag(True, doc="use min(decay, (1 + t) / (10 + t))")

    def rate(self, t: int) -> float:
        """:math:`r_t = 1 - d_t`, the weight of the new iterate."""
        decay = min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay
        return 1.0 - decay


@_averaging
class Polyak:
    """The mean of all iterates so far (Polyak-Ruppert averaging): :math:`r_t = 1/t`."""

    def rate(self, t: int) -> float:
        return 1.0 / t


def average_element(i, w, g, average, rate):
    a = average[i]
    average[i] = a + rate * (w[i] - a)


AVERAGE_KERNEL = Kernel(
    name="average",
    state=("average",),
    cpu=average_element,
    cuda="""
    const T a = average[i];
    average[i] = a + rate * (w[i] - a);
""",
)


def swap_element(i, w, g, average):
    a = average[i]
    average[i] = w[i]
    w[i] = a


SWAP_KERNEL = Kernel(
    name="swap_average",
    state=("average",),
    cpu=swap_element,
    cuda="""
    const T a = average[i];
    average[i] = w[i];
    w[i] = a;
""",
)
