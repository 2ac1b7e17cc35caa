"""The averaging API of an updater: the averages it keeps, and swapping them in.

An updater keeps averages of its weights with ``averaging=`` (:class:`mxopt.EMA`,
:class:`mxopt.Polyak`: state array ``"average"``), or its optimizer keeps an evaluation
point of its own (Schedule-Free's ``"x"``). :class:`AverageMethods` is the part of
:class:`mxopt.Updater` that serves them.
"""

from __future__ import annotations

import contextlib

from mxopt.core.checks import shown
from mxopt.kernels import backend_module, backends
from mxopt.kernels.precision import low_precision_format
from mxopt.optimizers.averaging import SWAP_KERNEL
from mxopt.training import precision

__all__ = ["AverageMethods"]


class AverageMethods:
    """What :class:`mxopt.Updater` offers for averaged weights (it needs ``averaging``,
    ``optimizer`` and ``states``)."""

    @property
    def average_name(self) -> str | None:
        """The state array the averaging API serves: ``"average"`` with ``averaging=``,
        else the optimizer's own evaluation point (Schedule-Free's ``"x"``), else None."""
        return "average" if self.averaging is not None else self.optimizer.evaluation_point

    @property
    def averages(self) -> dict:
        """``{index: average array}``: the averages of ``averaging=``, or the optimizer's
        own evaluation points (Schedule-Free's x); empty if there are neither."""
        name = self.average_name
        if name is None:
            return {}
        return {index: state.arrays[name] for index, state in self.states.items()}

    def swap_averages(self, weights) -> None:
        """Exchange each weight's contents with its average, in place.

        ``weights`` maps indices to their weight arrays (e.g. a dict of your
        model's parameters). Calling it twice restores everything exactly. All
        weights are checked before anything is swapped.
        """
        name = self.average_name
        if name is None:
            raise ValueError(
                f"swap_averages: this updater keeps no averages (averaging=None, and "
                f"{type(self.optimizer).__name__} has no evaluation point of its own)"
            )
        checked = []
        for index, weight in dict(weights).items():
            state = self.states.get(index)
            if state is None:
                raise KeyError(f"swap_averages: index {shown(index)} has no state (never updated)")
            if state.portable:
                state.place_like(index, weight)
            w = backends.flat_weight(index, weight, state)
            if low_precision_format(state.dtype) is not None:
                raise precision.refuse(index, "swap_averages (a float32 average cannot be "
                                       "swapped into it and back exactly; read "
                                       "updater.averages[index])", state.dtype)  # fmt: skip
            checked.append((w, state))
        for w, state in checked:
            # the swap kernel works on whichever state array is passed as its "average"
            backend_module(state.backend).run(SWAP_KERNEL, w, w, (state.flat[name],), (), False)

    @contextlib.contextmanager
    def averaged(self, weights):
        """``with updater.averaged(weights):`` evaluate with the averaged weights."""
        self.swap_averages(weights)
        try:
            yield weights
        finally:
            self.swap_averages(weights)
