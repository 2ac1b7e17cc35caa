"""One sample instance of every scheduler class, for the generic schedule tests.

A test fails if a class exported by ``mxopt.LearningRate`` or ``mxopt.Momentum``
has no sample here, so a new scheduler cannot skip the generic checks.
"""

from __future__ import annotations

import inspect

from mxopt import LearningRate as L
from mxopt import Momentum as M
from mxopt.core.schedule import AbstractSchedule

LEARNING_RATE = {
    "Fixed": L.Fixed(0.1),
    "Exp": L.Exp(0.1, gamma=0.9, decay_on_iteration=True),
    "Inv": L.Inv(0.1),
    "Factor": L.Factor(5, 0.5, base_lr=0.1, warmup_steps=3),
    "MultiFactor": L.MultiFactor([4, 9], 0.5, base_lr=0.1),
    "Poly": L.Poly(20, 0.1, warmup_steps=2),
    "Cosine": L.Cosine(20, 0.1, final_lr=0.01),
    "Step": L.Step(0.1, 4, 0.5),
    "MultiStep": L.MultiStep(0.1, [3, 7]),
    "Exponential": L.Exponential(0.1, 0.8, steps=2),
    "Linear": L.Linear(0.0, 0.1, 10),
    "Polynomial": L.Polynomial(0.1, 0.01, 10, power=2.0),
    "CosineAnnealing": L.CosineAnnealing(0.1, 10, 0.001),
    "WarmupCosine": L.WarmupCosine(0.1, 3, 20),
    "CosineRestarts": L.CosineRestarts(0.1, 3, 2),
    "OneCycle": L.OneCycle(0.1, 20),
    "Cyclic": L.Cyclic(0.01, 0.1, 3, mode="triangular2"),
    "Decaying": L.Decaying(0.1, 0.1),
    "Compounding": L.Compounding(0.01, 0.1, 1.3),
    "SlantedTriangular": L.SlantedTriangular(0.1, 20, cut_frac=0.2),
    "WarmupLinear": L.WarmupLinear(0.1, 3, 15),
    "PiecewiseConstant": L.PiecewiseConstant([0.1, 0.05, 0.01], [4, 8]),
    "FromList": L.FromList([0.1, 0.05, 0.02]),
    "FromGenerator": L.FromGenerator(0.1 / (k + 1) for k in range(12)),
    "FromCallable": L.FromCallable(lambda s: 0.1 / (1 + s.curr_iter)),
    "Plateau": L.Plateau(0.1, patience=1),
    "Warmup": L.Warmup(L.Step(0.1, 3, 0.5), 4, begin=0.01),
    "Join": L.Join([L.Linear(0.0, 0.1, 5), L.CosineAnnealing(0.1, 10)], [5]),
    "Product": L.Product([L.Linear(0.5, 1.0, 5), L.Step(0.1, 4, 0.5)]),
}

MOMENTUM = {
    "Null": M.Null(),
    "Fixed": M.Fixed(0.9),
    "NadamScheduler": M.NadamScheduler(),
    "Linear": M.Linear(0.95, 0.85, 10),
    "Cosine": M.Cosine(0.85, 0.95, 10),
    "Cyclic": M.Cyclic(0.8, 0.9, 3),
    "OneCycle": M.OneCycle(20),
    "FromList": M.FromList([0.9, 0.8]),
    "FromCallable": M.FromCallable(lambda s: 0.9 - 0.01 * min(s.curr_iter, 10)),
    "Join": M.Join([M.Linear(0.95, 0.85, 5), M.Fixed(0.85)], [5]),
}


def classes(namespace) -> dict[str, type]:
    return {
        name: getattr(namespace, name)
        for name in namespace.__all__
        if inspect.isclass(getattr(namespace, name))
        and issubclass(getattr(namespace, name), AbstractSchedule)
    }


def all_samples():
    """``(label, scheduler)`` for every sample, ``LearningRate.X`` and ``Momentum.X``."""
    return [(f"LearningRate.{k}", v) for k, v in LEARNING_RATE.items()] + [
        (f"Momentum.{k}", v) for k, v in MOMENTUM.items()
    ]
