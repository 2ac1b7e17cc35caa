"""AdEMAMix oracle (Pagliardini, Ablin & Grangier 2024, arXiv:2409.03137, Algorithm 1
and its schedulers; optax.contrib.ademamix).

k is the update count of this weight (1 at the first); T_a, T_b the warm-up lengths.
alpha_k = min(k alpha / T_a, alpha)                              (alpha when T_a = 0)
beta3_k = min(exp(ln b1 ln b3 / ((1 - k/T_b) ln b3 + (k/T_b) ln b1)), b3)  (b3 when T_b = 0)
m1 = b1 m1 + (1-b1) g;  m2 = beta3_k m2 + (1-beta3_k) g;  nu = b2 nu + (1-b2) g^2
W = (1 - lr wd) W - lr (m1 / (1-b1^k) + alpha_k m2) / (sqrt(nu / (1-b2^k)) + eps)
(decoupled decay; with decoupled_weight_decay=False, g carries wd W instead)
cautious (Liang et al. 2024): W -= lr * s * (u * [u g > 0]) with u the fraction above and
s = n / (number kept + 1) per tensor (tests/reference/common.py).
"""

import math

import numpy as np

from mxopt import LearningRate
from tests.reference.common import cautious, decoupled_decay, normalized_gradient
from tests.reference.table import Case, OptaxCase, Setting


def paper_alpha(t, alpha, warmup):
    """f_alpha(t, alpha, T) of the paper (the plain value without a warm-up)."""
    return alpha if warmup == 0 else min(t * alpha / warmup, alpha)


def paper_beta3(t, beta_start, beta3, warmup):
    """f_beta3(t, beta3, T) of the paper, from beta_start = beta1."""
    if warmup == 0:
        return beta3
    s = t / warmup
    log_start, log3 = math.log(beta_start), math.log(beta3)
    return min(math.exp(log_start * log3 / ((1 - s) * log3 + s * log_start)), beta3)


def init(shape, x):
    return {"mean": np.zeros(shape), "slow_mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    alpha = paper_alpha(x.k, x.alpha, x.alpha_warmup_steps)
    beta3 = paper_beta3(x.k, x.beta1, x.beta3, x.beta3_warmup_steps)
    m1, m2, nu = state["mean"], state["slow_mean"], state["var"]
    m1[...] = x.beta1 * m1 + (1 - x.beta1) * g
    m2[...] = beta3 * m2 + (1 - beta3) * g
    nu[...] = x.beta2 * nu + (1 - x.beta2) * g * g
    m1_hat = m1 / (1 - x.beta1**x.k)
    nu_hat = nu / (1 - x.beta2**x.k)
    u = (m1_hat + alpha * m2) / (np.sqrt(nu_hat) + x.epsilon)
    w -= x.lr * cautious(u, g, x)


# -- the peer's schedules: optax calls them with its update count, 0 at the first --


class OptaxWarmup:
    """An optax ``alpha`` or ``b3`` schedule: the paper's warm-up at update ``count + 1``
    (jax-traceable; its repr is what the docs' agreement table shows)."""

    def __init__(self, name, target, warmup, beta_start=None):
        self.name, self.target, self.warmup, self.beta_start = name, target, warmup, beta_start

    def __call__(self, count):
        import jax.numpy as jnp

        s = jnp.minimum((count + 1) / self.warmup, 1.0)
        if self.beta_start is None:
            return s * self.target
        log_start, log3 = math.log(self.beta_start), math.log(self.target)
        beta = jnp.exp(log_start * log3 / ((1 - s) * log3 + s * log_start))
        return jnp.minimum(beta, self.target)

    def __repr__(self):
        start = "" if self.beta_start is None else f", from {self.beta_start}"
        return f"<{self.name} warm-up to {self.target} over {self.warmup} updates{start}>"


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("AdEMAMix",)

CASES = [
    Case("AdEMAMix", "default"),
    Case("AdEMAMix", "fast-betas", {"beta3": 0.9, "alpha": 2.0, "lr": 0.01, "epsilon": 1e-3}),
    Case(
        "AdEMAMix",
        "warmups",
        {"alpha_warmup_steps": 5, "beta3_warmup_steps": 6, "beta3": 0.999, "lr": 0.01},
    ),
    Case("AdEMAMix", "alpha-warmup-only", {"alpha_warmup_steps": 20, "alpha": 8.0}),
    Case(
        "AdEMAMix",
        "decay-maximize",
        {"weight_decay": 0.5, "lr": 0.01, "maximize": True, "beta3_warmup_steps": 4},
    ),
    Case(
        "AdEMAMix",
        "coupled-l2",
        {"decoupled_weight_decay": False, "weight_decay": 0.1, "beta1": 0.0, "beta2": 0.5},
    ),
    Case(
        "AdEMAMix",
        "exp-on-iteration",
        {
            "beta1": 0.5,
            "beta3_warmup_steps": 3,
            "lr_scheduler": LearningRate.Exp(0.01, gamma=0.5, decay_on_iteration=True),
        },
    ),
    Case("AdEMAMix", "cautious", {"cautious": True, "beta3": 0.9, "lr": 0.02, "weight_decay": 0.1}),
    Case(
        "AdEMAMix",
        "cautious-warmups-coupled",
        {
            "cautious": True,
            "alpha_warmup_steps": 4,
            "beta3_warmup_steps": 5,
            "decoupled_weight_decay": False,
            "weight_decay": 0.05,
            "maximize": True,
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("AdEMAMix", "AdEMAMix", {"lr": 1e-2, "beta3": 0.999}, 4000, 1e-4,
        note="beta3=0.999: the paper's advice for short runs (0.9999 averages over ~10^4 updates)"),
]
# fmt: on

# fmt: off
OPTAX = [
    OptaxCase("AdEMAMix", "AdEMAMix", {"lr": 1e-2, "weight_decay": 0.1},
        "contrib.ademamix", {"learning_rate": 1e-2, "weight_decay": 0.1}),
    OptaxCase("AdEMAMix warm-ups", "AdEMAMix",
        {"lr": 1e-2, "beta3": 0.999, "alpha_warmup_steps": 30, "beta3_warmup_steps": 40},
        "contrib.ademamix",
        {"learning_rate": 1e-2, "b3": OptaxWarmup("beta3", 0.999, 40, beta_start=0.9),
         "alpha": OptaxWarmup("alpha", 5.0, 30)}),
]
# fmt: on
