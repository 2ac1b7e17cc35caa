"""Adding an optimizer is two files and one line, and the generic machinery picks it up.

The test follows the documented recipe (``docs/architecture.md``) from outside mxopt, in a
temporary folder:

1. ``signum.py``, the optimizer file: Signum (Bernstein et al. 2018, "signSGD: Compressed
   Optimisation for Non-Convex Problems", arXiv:1802.04434): a momentum, and a step of
   ``lr`` in the direction of its sign. Its math in the docstring, its options, its
   kernel (both twins), ``@mxopt.register`` and ``about``;
2. ``signum_oracle.py``, its oracle: the float64 formulas, and the declarations (test
   cases, a convergence setting);
3. the registration line: importing ``signum``, which the test suite does when
   ``MXOPT_EXTRA_OPTIMIZERS`` names it (inside mxopt it is one import line in
   ``mxopt/optimizers/__init__.py``).

Then it runs, in a new process, the generic test files with ``-k Signum``: the oracle
trajectories (every variant, dtype and shape), packed buffers, ``update_many``,
checkpoints, parallel kernels, the CUDA twin compiled with g++ and run through the fake
CuPy, the convergence test; and it builds the generated docs tables. They must have run
and passed. The same run with an oracle that is off by a little must fail: the machinery
compares for real.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

OPTIMIZER = '''
"""Signum (Bernstein et al. 2018, arXiv:1802.04434): the sign of a momentum.

.. math::

    m \\\\leftarrow \\\\beta m + (1 - \\\\beta) g, \\\\qquad
    W \\\\leftarrow W - \\\\eta \\\\operatorname{sign}(m)
"""

import mxopt
from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer
from mxopt.optimizers.options import AbstractOptimizerOptions, options


def signum_element(i, w, g, mean, rescale, clip, wd, lr, beta, one_minus_beta):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    m = beta * mean[i] + one_minus_beta * gi
    mean[i] = m
    if m > 0:
        w[i] = w[i] - lr
    elif m < 0:
        w[i] = w[i] + lr


SIGNUM_KERNEL = Kernel(
    name="signum",
    state=("mean",),
    cpu=signum_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T m = beta * mean[i] + one_minus_beta * gi;
    mean[i] = m;
    if (m > T(0)) w[i] = w[i] - lr;
    else if (m < T(0)) w[i] = w[i] + lr;
""",
)


@options
class SignumOptions(AbstractOptimizerOptions):
    """Options of :class:`Signum`."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="the length of every step")
    beta: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the momentum")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="coupled L2 coefficient")


@mxopt.register
class Signum(AbstractOptimizer):
    """Signum: a step of ``lr`` in the direction of the sign of a momentum.

    ``Signum(*, lr=0.001, beta=0.9, grad_clip=0.0, weight_decay=0.0, grad_scale=1.0,
    maximize=False, lr_scheduler=None, state=None)``

    State: ``"mean"``, 4 bytes per float32 parameter.
    """

    Options = SignumOptions
    about = About(family="others", same_as="Bernstein et al.'s Signum",
                  weight_decay="coupled L2", epsilon="")

    def kernel(self):
        return SIGNUM_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {"rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr,
                "beta": v.beta, "one_minus_beta": 1.0 - v.beta}
'''

ORACLE = '''
"""Signum oracle (Bernstein et al. 2018, Algorithm 3): m = b m + (1 - b) g; W -= lr sign(m)."""

import numpy as np

from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting

OPTIMIZERS = ("Signum",)
CASES = [
    Case("Signum", "default"),
    Case("Signum", "beta-lr-maximize", {"beta": 0.5, "lr": 0.01, "maximize": True}),
]
CONVERGENCE = [Setting("Signum", "Signum", {"lr": 1e-3}, 5000, 1e-2)]


def init(shape, x):
    return {"mean": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    m = state["mean"]
    m[...] = x.beta * m + (1 - x.beta) * g
    w -= x.lr * np.sign(m) * OFF_BY
'''

#: The generic test files that read the optimizer table.
GENERIC = [
    "tests/test_optimizers.py",
    "tests/test_buffer.py",
    "tests/test_robustness.py",
    "tests/test_checkpoint.py",
    "tests/test_parallel.py",
    "tests/test_averaging.py",
    "tests/test_convergence.py",
    "tests/test_gpu_emulated.py",
    "tests/test_cuda_sources.py",
    "tests/test_registry.py",
    "tests/test_schedule_hyperparameters.py",
]

DOCS = """
import importlib.util, pathlib
import signum  # the registration line (inside mxopt: an import in mxopt/optimizers/__init__.py)
spec = importlib.util.spec_from_file_location("generated", "docs/_ext/generated.py")
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)
print(generated.render("<!-- mxopt:family-table others -->"))
print(generated.render("<!-- mxopt:memory-table -->"))
print(generated.render("<!-- mxopt:convergence-table -->"))
"""


def _write(folder: pathlib.Path, off_by: str) -> dict:
    (folder / "signum.py").write_text(textwrap.dedent(OPTIMIZER))
    (folder / "signum_oracle.py").write_text(textwrap.dedent(ORACLE) + f"\nOFF_BY = {off_by}\n")
    env = dict(os.environ, MXOPT_EXTRA_OPTIMIZERS="signum", MXOPT_EXTRA_ORACLES="signum_oracle")
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(NUMBA_NUM_THREADS="2", MXOPT_PARALLEL_MIN_SIZE="1000")
    return env


def _pytest(env, *arguments):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         *arguments],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _counts(output: str) -> dict:
    last = output.strip().splitlines()[-1]
    counts = {}
    for part in last.split(","):
        words = part.split()
        for k, word in enumerate(words[:-1]):
            if word.isdigit():
                counts[words[k + 1]] = int(word)
    return counts


def _passed_per_file(output: str) -> dict:
    """``{test file: tests passed}`` from pytest's ``-rA`` summary."""
    passed = {}
    for line in output.splitlines():
        if line.startswith("PASSED "):
            path = line.split()[1].split("::")[0]
            passed[path] = passed.get(path, 0) + 1
    return passed


@pytest.mark.slow
def test_a_new_optimizer_is_picked_up_by_the_generic_tests_and_the_docs(tmp_path):
    env = _write(tmp_path, "1.0")
    result = _pytest(env, *GENERIC, "-k", "Signum or signum", "-rA")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    passed = _passed_per_file(result.stdout)
    assert set(passed) == set(GENERIC), passed  # every generic file ran the new optimizer
    # 2 cases x 5 variants x 2 dtypes x 4 shapes against the oracle, at least
    assert passed["tests/test_optimizers.py"] >= 80, passed
    docs = subprocess.run([sys.executable, "-c", DOCS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert docs.returncode == 0, docs.stderr[-3000:]
    assert "[`Signum`][mxopt.Signum]" in docs.stdout  # the family table
    assert "| `Signum()` | `mean` | 4 |" in docs.stdout  # the memory table
    assert "| Signum | `Signum(lr=0.001)` | 5000 |" in docs.stdout  # the convergence table


@pytest.mark.slow
def test_a_wrong_oracle_is_caught(tmp_path):
    env = _write(tmp_path, "1.0001")
    result = _pytest(env, "tests/test_optimizers.py", "-k", "Signum and matches_oracle and f64")
    assert result.returncode != 0
    assert _counts(result.stdout).get("failed", 0) > 0, result.stdout[-2000:]


def test_the_recipe_files_are_what_the_docs_show():
    """docs/architecture.md walks through this very optimizer."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "signum_element" in page and "@mxopt.register" in page
    spec = importlib.util.find_spec("tests.reference.table")
    assert spec is not None
