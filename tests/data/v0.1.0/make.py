"""Written with mxopt 0.1.0 (the tree before the step-engine refactor): checkpoints and
configs that later versions must load, and what the run gives after them."""

import pathlib
import sys

import numpy as np

import mxopt
from mxopt import LearningRate, Momentum

out = pathlib.Path(sys.argv[1])
SETUPS = {
    "adam-exp-ema": (
        lambda st: mxopt.ADAM(lr=0.01, lr_scheduler=LearningRate.Exp(0.05, gamma=0.9), state=st),
        dict(averaging=mxopt.EMA(0.9)),
    ),
    "nadam-schedule": (
        lambda st: mxopt.Nadam(
            lr=0.01, momentum_scheduler=Momentum.NadamScheduler(mu0=0.9), state=st
        ),
        {},
    ),
    "adafactor": (lambda st: mxopt.Adafactor(state=st), {}),
    "sgd-groups": (lambda st: mxopt.SGD(lr=0.1, momentum=0.9, state=st), {}),
    "lamb-clip-scaler": (
        lambda st: mxopt.LAMB(lr=0.01, state=st),
        dict(
            max_grad_norm=1.0,
            loss_scaler=mxopt.DynamicLossScaler(init_scale=4.0, growth_interval=3),
        ),
    ),
    "lookahead-radam": (lambda st: mxopt.Lookahead(mxopt.RAdam(lr=0.01, state=st), k=3), {}),
}
SHAPES = {"w1": (6, 5), "b1": (5,), "w2": (5, 3)}


def grads(rng):
    return {k: (rng.standard_normal(s) * 2).astype(np.float32) for k, s in SHAPES.items()}


expected = {}
for name, (make, extra) in SETUPS.items():
    rng = np.random.default_rng(7)
    state = mxopt.OptimizationState(batch_size=4)
    updater = mxopt.get_updater(make(state), **extra)
    if name == "sgd-groups":
        updater.set_lr_mult({"b*": 0.5})
        updater.set_wd_mult({"b1": 0.0})
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    state.begin_epoch()
    for _ in range(7):
        state.begin_batch()
        g = grads(rng)
        updater.update_many(list(g), list(g.values()), [weights[k] for k in g])
    updater.save(out / f"{name}.npz")
    np.savez(out / f"{name}-weights.npz", **weights)
    for _ in range(5):
        state.begin_batch()
        g = grads(rng)
        updater.update_many(list(g), list(g.values()), [weights[k] for k in g])
    arrays = {f"weight.{k}": v for k, v in weights.items()}
    for index, st in updater.states.items():
        for a, v in st.arrays.items():
            arrays[f"state.{index}.{a}"] = v
    np.savez(out / f"{name}-expected.npz", **arrays)

config = mxopt.AdamW(
    lr=0.002,
    lr_scheduler=LearningRate.WarmupCosine(peak_lr=0.002, warmup_steps=10, decay_steps=100),
    beta2=0.99,
)
for fmt in ("cfg", "toml", "json"):
    (out / f"adamw-warmup-cosine.{fmt}").write_text(mxopt.dumps_config(config, fmt))
(out / "adamw-warmup-cosine.repr").write_text(repr(config) + "\n")
