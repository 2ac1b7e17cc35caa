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
from mxopt.core.state import OptimizationState, StateNotAdvancedWarning
from mxopt.core.version import __version__ as __version__
from mxopt.kernels.rows import RowSparse
from mxopt.kernels.statistics import global_norm, gradient_sums
from mxopt.optimizers import *  # noqa: F403  (every optimizer of the table, and Ranger)
from mxopt.optimizers import __all__ as _optimizer_names
from mxopt.optimizers.averaging import EMA, Polyak
from mxopt.optimizers.base import (
    AbstractOptimizer,
    Multipliers,
    normalized_gradient,
    register,
)
from mxopt.optimizers.options import AbstractOptimizerOptions
from mxopt.persist import registry
from mxopt.persist.archive import CheckpointError
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
from mxopt.training.checkpoint import read_checkpoint, write_checkpoint
from mxopt.training.engine import NONFINITE_POLICIES, StepStatistics
from mxopt.training.groups import mxnet_wd_mult
from mxopt.training.loss_scaling import DynamicLossScaler
from mxopt.training.lr_find import LRFindResult, lr_find
from mxopt.training.minimize import MinimizeResult, minimize
from mxopt.training.updater import (
    Updater,
    WeightState,
    create_state,
    get_updater,
    load_updater,
    update,
)

__all__ = [
    *_optimizer_names,
    "AbstractLearningRateScheduler",
    "AbstractMomentumScheduler",
    "AbstractOptimizer",
    "AbstractOptimizerOptions",
    "AbstractSchedule",
    "CheckpointError",
    "ConfigError",
    "DynamicLossScaler",
    "EMA",
    "LRFindResult",
    "LearningRate",
    "MinimizeResult",
    "Momentum",
    "Multipliers",
    "NONFINITE_POLICIES",
    "OptimizationState",
    "StateNotAdvancedWarning",
    "ParameterBuffer",
    "Polyak",
    "RowSparse",
    "StepStatistics",
    "Updater",
    "WeightState",
    "create_state",
    "dumps_config",
    "from_config",
    "get_learning_rate",
    "get_momentum",
    "get_updater",
    "global_norm",
    "gradient_sums",
    "load_updater",
    "lr_find",
    "minimize",
    "read_checkpoint",
    "write_checkpoint",
    "mxnet_wd_mult",
    "normalized_gradient",
    "plot_schedules",
    "register",
    "registry",
    "save_config",
    "schedule_values",
    "to_config",
    "update",
]
