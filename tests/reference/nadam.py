"""Nadam oracle (mxnet-semantics.md section 1.7, Nadam; Dozat 2016), with decoupled decay.

(mu_t, mu_t1) = the schedule at t = curr_iter (the global iteration):
    mu_s = mu0 * (1 - gamma * alpha^(s * delta)); by default mu0 = beta1, delta = 0.004,
    gamma = 0.5, alpha = 0.96
P = P * mu_t (P starts at 1, one per weight);  P' = P * mu_t1
g_hat = g / (1 - P)
m = b1 m + (1-b1) g;  m_hat = m / (1 - P')
n = b2 n + (1-b2) g^2;  n_hat = n / (1 - b2^k)
m_bar = (1 - mu_t) g_hat + mu_t1 m_hat
W -= lr * m_bar / (sqrt(n_hat) + eps)
decoupled weight decay: W *= 1 - lr * wd first, and g has no L2 term.
"""

import numpy as np

import mxopt
from mxopt import LearningRate, Momentum
from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


class State(dict):
    """The state arrays, plus the running product of the momenta (not an array)."""

    mu_product = 1.0


def init(shape, x):
    return State(mean=np.zeros(shape), var=np.zeros(shape))


def momentum(x, s):
    """mu_s of Dozat's schedule, from the scheduler's parameters (or the defaults)."""
    sched = x.momentum_scheduler
    if sched is None:
        mu0, delta, gamma, alpha = x.beta1, 0.004, 0.5, 0.96
    else:
        mu0, delta, gamma, alpha = sched.mu0, sched.delta, sched.gamma, sched.alpha
    return mu0 * (1 - gamma * alpha ** (s * delta))


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    mu_t, mu_t1 = momentum(x, x.curr_iter), momentum(x, x.curr_iter + 1)
    state.mu_product *= mu_t
    p, p_next = state.mu_product, state.mu_product * mu_t1
    m, n = state["mean"], state["var"]
    g_hat = g / (1 - p)
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    m_hat = m / (1 - p_next)
    n[...] = x.beta2 * n + (1 - x.beta2) * g * g
    n_hat = n / (1 - x.beta2**x.k)
    m_bar = (1 - mu_t) * g_hat + mu_t1 * m_hat
    w -= x.lr * m_bar / (np.sqrt(n_hat) + x.epsilon)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Nadam",)

CASES = [
    Case("Nadam", "default"),
    Case(
        "Nadam",
        "scheduler",
        {
            "momentum_scheduler": Momentum.NadamScheduler(mu0=0.9, delta=0.1, gamma=0.3, alpha=0.5),
            "lr": 0.01,
        },
    ),
    Case(
        "Nadam",
        "decoupled-maximize",
        {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True},
    ),
    Case(
        "Nadam",
        "betas-exp-on-iteration",
        {
            "beta1": 0.5,
            "beta2": 0.9,
            "epsilon": 1e-3,
            "lr_scheduler": LearningRate.Exp(0.05, gamma=0.5, decay_on_iteration=True),
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("Nadam", "Nadam", {"lr": 1e-2, "weight_decay": 0.0}, 4000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("NAdam", "Nadam",
        {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-2,
         "momentum_scheduler": mxopt.Momentum.NadamScheduler(mu0=0.9, delta=0.004)},
        "NAdam", {"lr": 1e-2, "betas": (0.9, 0.999), "weight_decay": 1e-2,
                  "momentum_decay": 0.004}),
    TorchCase("NAdam decoupled", "Nadam",
        {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6, "weight_decay": 0.1,
         "decoupled_weight_decay": True,
         "momentum_scheduler": mxopt.Momentum.NadamScheduler(mu0=0.8, delta=0.02)},
        "NAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1,
                  "decoupled_weight_decay": True, "momentum_decay": 0.02}),
]
# fmt: on
