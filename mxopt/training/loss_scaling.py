"""Dynamic loss scaling for float16 training (as torch.cuda.amp.GradScaler).

Multiply the loss by ``scaler.scale`` before the backward pass so that small
float16 gradients do not underflow; give the scaler to the updater
(``get_updater(optimizer, loss_scaler=scaler)``) and update all weights at
once with :meth:`mxopt.Updater.update_many`. The updater divides the
gradients by the scale inside the kernels (your gradient arrays are not
modified) and, after each step:

* if any gradient held a NaN or infinite value, the whole step is skipped
  (weights, optimizer state and step counts untouched), the skip is counted,
  and the scale is multiplied by ``backoff_factor``;
* otherwise, after ``growth_interval`` clean steps in a row, the scale is
  multiplied by ``growth_factor``.

The scaler's state (scale, clean-step count, skips) is part of the updater's
checkpoints.
"""

from __future__ import annotations

import attrs

from mxopt.core.checks import shown
from mxopt.core.fields import hyperparameter, integer

__all__ = ["DynamicLossScaler"]


def _scaler(cls):
    cls.namespace = ""
    return attrs.define(cls, kw_only=True)


@_scaler
class DynamicLossScaler:
    """Loss scale that backs off on overflow and grows after clean steps.

    ``DynamicLossScaler(*, init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000)`` (torch's ``GradScaler`` defaults).

    Attributes:
        scale: the current loss scale (multiply the loss by it).
        clean_steps: steps without overflow since the scale last changed.
        skipped: steps skipped because of an overflow.
    """

    init_scale: float = hyperparameter(65536.0, gt=0.0, schedulable=False)
    growth_factor: float = hyperparameter(2.0, gt=1.0, schedulable=False)
    backoff_factor: float = hyperparameter(0.5, gt=0.0, lt=1.0, schedulable=False)
    growth_interval: int = integer(2000, ge=1, doc="clean steps before the scale grows")
    scale: float = attrs.field(init=False)
    clean_steps: int = attrs.field(init=False, default=0)
    skipped: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self):
        self.scale = self.init_scale

    def record(self, overflow: bool) -> None:
        """Advance after a step that did (or did not) find non-finite gradients."""
        if overflow:
            self.scale *= self.backoff_factor
            self.clean_steps = 0
            self.skipped += 1
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.clean_steps = 0

    def state_dict(self) -> dict:
        """Options and state as plain values."""
        return {
            "init_scale": self.init_scale,
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "scale": self.scale,
            "clean_steps": self.clean_steps,
            "skipped": self.skipped,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> DynamicLossScaler:
        """A scaler with the options and state of :meth:`state_dict`'s result."""
        scaler = cls(
            init_scale=state["init_scale"],
            growth_factor=state["growth_factor"],
            backoff_factor=state["backoff_factor"],
            growth_interval=state["growth_interval"],
        )
        scale, clean_steps, skipped = state["scale"], state["clean_steps"], state["skipped"]
        if not (isinstance(scale, float) and scale > 0 and scale < float("inf")):
            raise ValueError(
                f"DynamicLossScaler: saved scale must be a positive float, got {shown(scale)}"
            )
        for name, value in (("clean_steps", clean_steps), ("skipped", skipped)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"DynamicLossScaler: saved {name} must be an integer >= 0, got {shown(value)}"
                )
        scaler.scale, scaler.clean_steps, scaler.skipped = scale, clean_steps, skipped
        return scaler
