"""mxopt: optimizers and schedulers for hand-written training loops on NumPy and CuPy arrays.

A port of MXNet.jl's optimizer module: an explicit :class:`OptimizationState`,
learning-rate and momentum schedulers that are pure functions of it, and
``get_updater(optimizer)`` returning ``updater(index, grad, weight)``, with
fused Numba (CPU) and CUDA (GPU) kernels that update weights in place.
"""

from mxopt.core.schedule import (
    AbstractLearningRateScheduler,
    AbstractMomentumScheduler,
    AbstractSchedule,
)
from mxopt.core.state import OptimizationState
from mxopt.core.version import __version__
from mxopt.kernels.statistics import global_norm
from mxopt.optimizers import (
    ADAM,
    ASGD,
    LAMB,
    LARS,
    OPTIMIZERS,
    SGD,
    AdaDelta,
    Adafactor,
    AdaGrad,
    AdaMax,
    AdamW,
    Lion,
    Lookahead,
    Nadam,
    QHAdam,
    RAdam,
    Ranger,
    RMSProp,
    Rprop,
)
from mxopt.optimizers.averaging import EMA, Polyak
from mxopt.optimizers.base import AbstractOptimizer, AbstractOptimizerOptions, normalized_gradient
from mxopt.persist import registry
from mxopt.persist.config import ConfigError, from_config, to_config
from mxopt.persist.config import dumps as dumps_config
from mxopt.persist.config import save as save_config
from mxopt.schedules import learning_rate as LearningRate
from mxopt.schedules import momentum as Momentum
from mxopt.schedules.learning_rate import get_learning_rate
from mxopt.schedules.momentum import get_momentum
from mxopt.schedules.plot import plot_schedules
from mxopt.schedules.values import schedule_values
from mxopt.training.buffer import ParameterBuffer
from mxopt.training.checkpoint import CheckpointError, load_updater
from mxopt.training.groups import mxnet_wd_mult
from mxopt.training.loss_scaling import DynamicLossScaler
from mxopt.training.updater import (
    NONFINITE_POLICIES,
    Updater,
    WeightState,
    create_state,
    get_updater,
    update,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DynamicLossScaler",
    "NONFINITE_POLICIES",
    "dumps_config",
    "from_config",
    "save_config",
    "global_norm",
    "load_updater",
    "to_config",
    "ADAM",
    "AdaDelta",
    "Adafactor",
    "AdaGrad",
    "AdaMax",
    "ASGD",
    "AdamW",
    "EMA",
    "LAMB",
    "LARS",
    "Lion",
    "Lookahead",
    "Nadam",
    "QHAdam",
    "RAdam",
    "Ranger",
    "AbstractLearningRateScheduler",
    "AbstractMomentumScheduler",
    "AbstractOptimizer",
    "AbstractOptimizerOptions",
    "AbstractSchedule",
    "LearningRate",
    "Momentum",
    "OPTIMIZERS",
    "OptimizationState",
    "ParameterBuffer",
    "RMSProp",
    "Polyak",
    "Rprop",
    "SGD",
    "Updater",
    "WeightState",
    "create_state",
    "get_learning_rate",
    "get_momentum",
    "get_updater",
    "normalized_gradient",
    "plot_schedules",
    "schedule_values",
    "update",
]
