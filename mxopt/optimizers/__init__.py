"""Layer 3: every optimizer, one file each, and :data:`OPTIMIZERS`, the table of them.

Adding an optimizer: write ``mxopt/optimizers/<name>.py`` (its math in the docstring,
its options, its kernel, the class marked ``@register``), import it below as
``from mxopt.optimizers.<name> import X as X`` (the one registration line; the
redundant alias makes it a re-export for linters and type checkers, and ``mxopt``
re-exports everything here), and write its oracle in ``tests/reference/<name>.py``
(which also declares its test cases, its convergence setting and its peers). The generic tests, the
reference pages of the docs, the registry of config names and the benchmarks read the
table; see ``docs/architecture.md``.
"""

from mxopt.optimizers.adabelief import AdaBelief as AdaBelief
from mxopt.optimizers.adadelta import AdaDelta as AdaDelta
from mxopt.optimizers.adafactor import Adafactor as Adafactor
from mxopt.optimizers.adagrad import AdaGrad as AdaGrad
from mxopt.optimizers.adam import ADAM as ADAM
from mxopt.optimizers.adamax import AdaMax as AdaMax
from mxopt.optimizers.adamw import AdamW as AdamW
from mxopt.optimizers.adan import Adan as Adan
from mxopt.optimizers.ademamix import AdEMAMix as AdEMAMix
from mxopt.optimizers.adopt import ADOPT as ADOPT
from mxopt.optimizers.asgd import ASGD as ASGD
from mxopt.optimizers.base import OPTIMIZERS
from mxopt.optimizers.lamb import LAMB as LAMB
from mxopt.optimizers.lars import LARS as LARS
from mxopt.optimizers.lbfgs import LBFGS as LBFGS
from mxopt.optimizers.lion import Lion as Lion
from mxopt.optimizers.lookahead import Lookahead as Lookahead
from mxopt.optimizers.muon import Muon as Muon
from mxopt.optimizers.nadam import Nadam as Nadam
from mxopt.optimizers.prodigy import Prodigy as Prodigy
from mxopt.optimizers.qhadam import QHAdam as QHAdam
from mxopt.optimizers.radam import RAdam as RAdam
from mxopt.optimizers.ranger import Ranger as Ranger
from mxopt.optimizers.rmsprop import RMSProp as RMSProp
from mxopt.optimizers.rprop import Rprop as Rprop
from mxopt.optimizers.schedule_free import ScheduleFreeAdamW as ScheduleFreeAdamW
from mxopt.optimizers.schedule_free import ScheduleFreeSGD as ScheduleFreeSGD
from mxopt.optimizers.sgd import SGD as SGD
from mxopt.optimizers.soap import SOAP as SOAP
from mxopt.optimizers.sparse_adam import SparseAdam as SparseAdam

#: Ranger is a factory returning a Lookahead, so it is not in OPTIMIZERS.
__all__ = ["OPTIMIZERS", *OPTIMIZERS, "Ranger"]
