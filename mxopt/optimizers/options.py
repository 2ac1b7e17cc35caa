"""Optimizer options: the attrs records whose fields are an optimizer's keyword arguments.

Options are validated when they are built and whenever a field is assigned, with
messages that name the optimizer, the option, the value and the allowed range. Every
assignment bumps the record's ``_revision``, which keys the caches of host scalars.
"""

from __future__ import annotations

import attrs

from mxopt.core.fields import choice, flag, hyperparameter, integer, optional_instance
from mxopt.core.schedule import AbstractLearningRateScheduler

__all__ = [
    "SHARED_OPTIONS",
    "AbstractOptimizerOptions",
    "STATE_DTYPES",
    "decoupled_weight_decay_option",
    "options",
    "state_dtype_option",
]

#: How an optimizer's moments can be stored (``state_dtype``): computed in float32 always.
STATE_DTYPES = ("float32", "bfloat16", "int8")

#: Options every optimizer shares, placed last and in this order in signatures and reprs.
SHARED_OPTIONS = (
    "grad_clip",
    "weight_decay",
    "decoupled_weight_decay",
    "grad_scale",
    "maximize",
    "lr_scheduler",
    "momentum_scheduler",
    "multi_precision",
    "stochastic_rounding",
    "rounding_seed",
)


def _shared_options_last(cls, fields):
    own = [f for f in fields if f.name not in SHARED_OPTIONS]
    shared = sorted(
        (f for f in fields if f.name in SHARED_OPTIONS), key=lambda f: SHARED_OPTIONS.index(f.name)
    )
    return own + shared


def _count_revision(instance, attribute, value):
    # Every assignment bumps ``_revision``, which keys the caches of host scalars.
    object.__setattr__(instance, "_revision", getattr(instance, "_revision", 0) + 1)
    return value


def options(cls):
    """Class decorator for optimizer options: keyword-only attrs fields, validated on
    construction and assignment, with the optimizer's own options first and the shared
    ones (:data:`SHARED_OPTIONS`) last."""
    cls._revision = 0  # bumped by _count_revision
    return attrs.define(
        cls,
        kw_only=True,
        slots=False,  # room for the _revision counter
        field_transformer=_shared_options_last,
        on_setattr=[attrs.setters.convert, attrs.setters.validate, _count_revision],
    )


@options
class AbstractOptimizerOptions:
    """Base class of optimizer options.

    The fields every optimizer shares are the inputs of
    :func:`~mxopt.normalized_gradient`: ``grad_clip``, ``grad_scale``, ``maximize`` and
    (declared by each optimizer, whose defaults differ) ``weight_decay``; plus
    ``lr_scheduler``, which wins over ``lr`` when given; and how float16/bfloat16 weights
    are updated (``multi_precision``, ``stochastic_rounding``, ``rounding_seed``; see
    :mod:`mxopt.training.precision`).
    """

    grad_clip: float = hyperparameter(
        0.0, ge=0.0, doc="clip the rescaled gradient to [-grad_clip, grad_clip] when > 0"
    )
    grad_scale: float = hyperparameter(
        1.0, gt=0.0, doc="multiplies the gradient before it is divided by batch_size"
    )
    maximize: bool = flag(False, doc="ascend the objective instead of descending it")
    lr_scheduler: AbstractLearningRateScheduler | None = optional_instance(
        AbstractLearningRateScheduler, doc="learning-rate scheduler; wins over lr when given"
    )
    multi_precision: bool = flag(
        False, doc="keep a float32 master copy of each float16/bfloat16 weight (MXNet)"
    )
    stochastic_rounding: bool = flag(
        False, doc="round float16/bfloat16 results stochastically (unbiased), else to nearest"
    )
    rounding_seed: int = integer(0, doc="seed of the stochastic rounding's random stream")


def decoupled_weight_decay_option(default: bool = False):
    """The ``decoupled_weight_decay`` option of optimizers that offer both kinds of decay.

    False: coupled L2, ``weight_decay * W`` is added to the gradient (MXNet.jl).
    True: decoupled decay, ``W *= 1 - lr * weight_decay`` before the step
    (Loshchilov & Hutter's AdamW; Thinc's ``L2_is_weight_decay``, fastai's
    ``decouple_wd``).
    """
    return flag(default, doc="decay the weight directly (AdamW) instead of adding L2 to g")


def state_dtype_option():
    """The ``state_dtype`` option of optimizers whose state is moments (they declare which
    in ``moment_signs``): ``"float32"``, ``"bfloat16"``, or ``"int8"`` (blockwise dynamic
    quantization, Dettmers et al. 2022; see :mod:`mxopt.training.precision`)."""
    return choice(
        "float32", STATE_DTYPES,
        doc="storage of the moments: 'float32', 'bfloat16' or 'int8' (blockwise, 8-bit)",
    )  # fmt: skip
