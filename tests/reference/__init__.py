"""Independent float64 NumPy oracles, one module per optimizer, written from the formulas,
and the table of what each declares (see :mod:`tests.reference.table`).

Each oracle module has ``init(shape, x) -> {name: array}`` and ``step(w, g, state, x)``,
which updates float64 arrays in place. ``x`` is a ``types.SimpleNamespace`` of
plain numbers prepared by the test (see ``tests/cases.py``): every option of the
optimizer at the current state, ``lr`` (the effective learning rate), ``mu``
(the momentum value where one applies), ``batch_size``, ``curr_iter`` (the global
iteration) and ``k`` (the 1-based update count of this weight). Nothing here imports the
kernels.

The modules are found, not listed: every module of this folder that declares
``OPTIMIZERS`` is an oracle, and so is every module named in ``MXOPT_EXTRA_ORACLES``
(comma-separated, importable). ``MXOPT_EXTRA_OPTIMIZERS`` names modules to import first:
optimizers that register themselves from outside mxopt (the recipe test does both).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

__all__ = ["CASES", "CONVERGENCE", "OPTAX_CASES", "ORACLES", "REQUIRED_OPTIONS", "TORCH_CASES"]


def _names(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


def _oracle_modules() -> list:
    for name in _names("MXOPT_EXTRA_OPTIMIZERS"):
        importlib.import_module(name)  # registers its optimizer
    names = [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)]
    modules = [importlib.import_module(name) for name in [*names, *_names("MXOPT_EXTRA_ORACLES")]]
    return [module for module in modules if hasattr(module, "OPTIMIZERS")]


_MODULES = _oracle_modules()

#: Oracle module by optimizer name; every entry of mxopt.OPTIMIZERS needs one.
ORACLES = {name: module for module in _MODULES for name in module.OPTIMIZERS}
#: The cases of the generic tests (tests/cases.py crosses them with the shared variants).
CASES = [case for module in _MODULES for case in module.CASES]
#: The convergence settings (tests/test_convergence.py, the docs' convergence table).
CONVERGENCE = [setting for module in _MODULES for setting in module.CONVERGENCE]
#: mxopt settings paired with the torch.optim settings they reproduce.
TORCH_CASES = [case for module in _MODULES for case in getattr(module, "TORCH", ())]
#: mxopt settings paired with the optax transformations they reproduce.
OPTAX_CASES = [case for module in _MODULES for case in getattr(module, "OPTAX", ())]
#: Options an optimizer cannot be built without (for tests that build one from scratch).
REQUIRED_OPTIONS = {
    name: make
    for module in _MODULES
    for name, make in getattr(module, "REQUIRED_OPTIONS", {}).items()
}
