"""The peers of the benchmark suite: the same step written with NumPy, torch (for-loop,
foreach, fused), optax (jit) and Thinc, each ``f(name, shapes, rng) -> step``."""

from __future__ import annotations

import numpy as np

import mxopt

__all__ = ["HYPER", "PEERED", "available", "mxopt_optimizer", "numpy_step", "optax_step",
           "thinc_step", "torch_step"]  # fmt: skip

#: The hyperparameters of every implementation of the suite, mxopt's included.
HYPER = {"lr": 1e-3, "momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "wd": 1e-2}
#: The optimizers compared with their peers (others are timed in mxopt only).
PEERED = ("sgd-momentum", "adam", "adamw")


def mxopt_optimizer(name: str, state):
    """mxopt's side of the comparison: ``name`` with :data:`HYPER` (a peered name), or any
    optimizer of ``mxopt.OPTIMIZERS`` with its defaults."""
    h = HYPER
    if name not in PEERED:
        return mxopt.OPTIMIZERS[name](state=state)
    if name == "sgd-momentum":
        return mxopt.SGD(lr=h["lr"], momentum=h["momentum"], weight_decay=h["wd"], state=state)
    if name == "adam":
        return mxopt.ADAM(
            lr=h["lr"], epsilon=h["eps"], weight_decay=h["wd"], epsilon_hat=False, state=state
        )
    return mxopt.AdamW(lr=h["lr"], epsilon=h["eps"], weight_decay=h["wd"], state=state)


def numpy_step(name, shapes, rng):
    h = HYPER
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    first = [np.zeros(s, np.float32) for s in shapes]
    second = [np.zeros(s, np.float32) for s in shapes]
    scratch = [np.empty(s, np.float32) for s in shapes]
    t = [0]

    def sgd():
        for w, g, v, s in zip(weights, grads, first, scratch, strict=True):
            np.multiply(w, h["wd"], out=s)
            s += g
            v *= h["momentum"]
            v += s
            w -= h["lr"] * v

    def adam():
        t[0] += 1
        c1, c2 = 1 - h["beta1"] ** t[0], 1 - h["beta2"] ** t[0]
        for w, g, m, v, s in zip(weights, grads, first, second, scratch, strict=True):
            if name == "adamw":
                w *= 1 - h["lr"] * h["wd"]
                np.copyto(s, g)
            else:
                np.multiply(w, h["wd"], out=s)
                s += g
            m *= h["beta1"]
            m += (1 - h["beta1"]) * s
            v *= h["beta2"]
            np.multiply(s, s, out=s)
            v += (1 - h["beta2"]) * s
            np.sqrt(v, out=s)
            s *= 1 / np.sqrt(c2)
            s += h["eps"]
            np.divide(m, s, out=s)
            w -= (h["lr"] / c1) * s

    return sgd if name == "sgd-momentum" else adam


def torch_step(name, shapes, rng, mode):
    import torch

    h = HYPER
    params = [torch.from_numpy(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.from_numpy(rng.standard_normal(p.shape, dtype=np.float32))
    flags = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    flags = flags[mode]
    if name == "sgd-momentum":
        optimizer = torch.optim.SGD(
            params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["wd"], **flags
        )
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        optimizer = cls(params, lr=h["lr"], eps=h["eps"], weight_decay=h["wd"], **flags)
    return optimizer.step


def optax_step(name, shapes, rng):
    import jax
    import optax

    h = HYPER
    if name == "sgd-momentum":
        transform = optax.chain(
            optax.add_decayed_weights(h["wd"]), optax.sgd(h["lr"], momentum=h["momentum"])
        )
    elif name == "adam":
        transform = optax.chain(
            optax.add_decayed_weights(h["wd"]), optax.adam(h["lr"], eps=h["eps"])
        )
    else:
        transform = optax.adamw(h["lr"], eps=h["eps"], weight_decay=h["wd"])
    params = [jax.device_put(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    grads = [jax.device_put(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    state = [transform.init(params)]
    holder = [params]

    @jax.jit
    def update(params, grads, opt_state):
        updates, opt_state = transform.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def step():
        holder[0], state[0] = update(holder[0], grads, state[0])
        jax.block_until_ready(holder[0])

    return step


def thinc_step(name, shapes, rng):
    from thinc.api import SGD, Adam

    h = HYPER
    if name == "sgd-momentum":
        return None  # Thinc's SGD has no momentum
    optimizer = Adam(
        learn_rate=h["lr"],
        eps=h["eps"],
        L2=h["wd"],
        L2_is_weight_decay=name == "adamw",
        grad_clip=0.0,
    )
    del SGD
    weights = [rng.standard_normal(int(np.prod(s)), dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(w.size, dtype=np.float32) for w in weights]
    keys = [(0, f"p{i}") for i in range(len(weights))]

    def step():
        for k, key in enumerate(keys):
            weights[k], grads[k] = optimizer(key, weights[k], grads[k])

    return step


def available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False
