"""What an oracle file declares besides its formulas: the test cases, the convergence
setting and the peers of the optimizers it serves.

Every module of ``tests/reference`` (and every module named in the environment variable
``MXOPT_EXTRA_ORACLES``) that defines ``OPTIMIZERS`` is an oracle:

* ``OPTIMIZERS``: the names (in ``mxopt.OPTIMIZERS``) whose updates ``step`` computes;
* ``CASES``: :class:`Case` s of the generic tests (each crossed with the shared variants,
  dtypes, shapes and backends of ``tests/cases.py``), at least one per optimizer;
* ``CONVERGENCE``: :class:`Setting` s of ``tests/test_convergence.py``, at least one per
  optimizer (the docs' convergence table shows them);
* ``TORCH``: :class:`TorchCase` s pairing mxopt settings with the torch.optim ones they
  reproduce (optional; ``tests/torch_agreement.py`` runs them when torch is installed);
* ``OPTAX``: :class:`OptaxCase` s, the same for optax (``tests/optax_agreement.py``);
* ``REQUIRED_OPTIONS``: ``{name: () -> options}`` for optimizers that cannot be built
  without options (a wrapper's inner optimizer).

``tests/reference/__init__.py`` gathers them into the tables the tests read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mxopt

__all__ = ["Case", "OptaxCase", "Setting", "TorchCase"]


@dataclass(frozen=True)
class Case:
    """One configuration of an optimizer for the generic tests."""

    optimizer: str
    label: str
    options: dict = field(default_factory=dict)
    #: for wrappers (Lookahead): the wrapped optimizer's name and options; the shared
    #: variants then apply to the wrapped optimizer
    inner: tuple | None = None

    @property
    def id(self) -> str:
        return f"{self.optimizer}-{self.label}"


@dataclass(frozen=True)
class Setting:
    """A convergence setting: what a user would try, not tuned to the problem."""

    label: str
    #: the optimizer's name in mxopt.OPTIMIZERS
    optimizer: str
    options: dict
    #: Rosenbrock: the budget of updates, and the value f must drop below within it
    steps: int
    target: float
    #: for Lookahead: the wrapped optimizer's name and options
    inner: tuple | None = None
    note: str = ""

    def build(self, state: mxopt.OptimizationState) -> mxopt.AbstractOptimizer:
        if self.inner is not None:
            name, options = self.inner
            inner = mxopt.OPTIMIZERS[name](**options, state=state)
            return mxopt.OPTIMIZERS[self.optimizer](inner, **self.options)
        return mxopt.OPTIMIZERS[self.optimizer](**self.options, state=state)

    @property
    def call(self) -> str:
        """The constructor call, as in the docs: ``ADAM(lr=0.01, weight_decay=0.0)``."""
        args = [f"{k}={v!r}" for k, v in self.options.items()]
        if self.inner is not None:
            name, options = self.inner
            inner = ", ".join(f"{k}={v!r}" for k, v in options.items())
            args.insert(0, f"{name}({inner})")
        return f"{self.optimizer}({', '.join(args)})"


@dataclass(frozen=True)
class TorchCase:
    """mxopt settings and the torch.optim settings they reproduce (``batch_size=1``)."""

    label: str
    mxopt_name: str
    mxopt_options: dict
    torch_name: str
    torch_options: dict
    #: largest allowed max |w_mxopt - w_torch| over the trajectory
    tolerance: float = 2e-5
    #: steps with an all-zero gradient
    zero_steps: tuple = field(default=(7,))


@dataclass(frozen=True)
class OptaxCase:
    """mxopt settings and the optax transformation they reproduce (``batch_size=1``).

    ``optax_name`` is the transformation's dotted name under ``optax``
    (``"adabelief"``, ``"contrib.adopt"``); ``optax_options`` its keyword arguments.
    """

    label: str
    mxopt_name: str
    mxopt_options: dict
    optax_name: str
    optax_options: dict
    #: largest allowed max |w_mxopt - w_optax| over the trajectory
    tolerance: float = 2e-5
    #: steps with an all-zero gradient
    zero_steps: tuple = field(default=(7,))
