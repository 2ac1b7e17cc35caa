"""Convergence with low-precision weights and state: the curves of docs/low-precision.md.

Left: full-batch SGD on a least-squares problem whose bfloat16 weights sit around 96,
where bfloat16's spacing is 0.5 and every update is below half of it: rounded to
nearest, no weight ever moves (the loss stays flat); stochastic rounding makes the
progress of float32 in expectation; a float32 master copy (``multi_precision``) follows
float32 exactly up to the final rounding. Right: Adam on a noisy quadratic model of
8192 parameters with float32, bfloat16 and 8-bit moments (``state_dtype``).

    python benchmarks/plot_low_precision.py      # docs/low_precision_convergence.png + .json
"""

from __future__ import annotations

import json
import pathlib

import ml_dtypes
import numpy as np

import mxopt

BF16 = np.dtype(ml_dtypes.bfloat16)
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def least_squares_curve(weight_dtype, steps=250, lr=0.04, **options) -> list:
    """The loss after each SGD step (see the module docstring; tests/test_low_precision.py
    checks the same problem)."""
    rng = np.random.default_rng(7)
    m, n = 256, 32
    a = rng.normal(size=(m, n)) / np.sqrt(m)
    b = a @ (96 + rng.uniform(-2, 2, n)) + rng.normal(size=m) * 0.3
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    updater = mxopt.get_updater(mxopt.SGD(lr=lr, state=state, **options))
    weight = (96 + rng.uniform(-2, 2, n)).astype(BF16).astype(weight_dtype)

    def loss(w):
        return 0.5 * float(np.sum((a @ w.astype(np.float64) - b) ** 2))

    curve = [loss(weight)]
    for _ in range(steps):
        state.begin_batch()
        grad = a.T @ (a @ weight.astype(np.float64) - b)
        assert lr * np.abs(grad).max() < 0.25  # every update below half of 0.5
        updater(0, grad.astype(weight_dtype), weight)
        curve.append(loss(weight))
    return curve


def quadratic_curve(state_dtype: str, steps=400) -> list:
    """Adam (lr 0.01) on a noisy quadratic model of 8192 parameters (Zhang et al. 2019):
    ``0.5 * sum(h * (w - w*)**2)`` with curvatures ``h`` log-uniform in [1e-3, 1] and
    Gaussian noise on every gradient; the loss after each step."""
    rng = np.random.default_rng(3)
    n = 8192
    h = np.exp(rng.uniform(np.log(1e-3), 0.0, n))
    target = rng.normal(size=n)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    optimizer = mxopt.ADAM(lr=0.01, weight_decay=0.0, state_dtype=state_dtype, state=state)
    updater = mxopt.get_updater(optimizer)
    weight = np.zeros(n, np.float32)
    curve = [0.5 * float(np.sum(h * (weight - target) ** 2))]
    for _ in range(steps):
        state.begin_batch()
        grad = h * (weight - target) + 0.1 * np.sqrt(h) * rng.normal(size=n)
        updater(0, grad.astype(np.float32), weight)
        curve.append(0.5 * float(np.sum(h * (weight - target) ** 2)))
    return curve


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sgd = {
        "float32": least_squares_curve(np.float32),
        "bfloat16, to nearest": least_squares_curve(BF16),
        "bfloat16, stochastic rounding": least_squares_curve(BF16, stochastic_rounding=True),
        "bfloat16 + float32 master": least_squares_curve(BF16, multi_precision=True),
    }
    adam = {name: quadratic_curve(name) for name in ("float32", "bfloat16", "int8")}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, curve in sgd.items():
        left.plot(curve, label=label)
    left.set(title="SGD, weights near 96 (bfloat16 spacing 0.5)", xlabel="step", ylabel="loss")
    left.set_yscale("log")
    left.legend()
    for label, curve in adam.items():
        right.plot(curve, label=f"state_dtype={label!r}")
    right.set(title="Adam, noisy quadratic, 8192 parameters", xlabel="step", ylabel="loss")
    right.set_yscale("log")
    right.legend()
    figure.tight_layout()
    figure.savefig(DOCS / "low_precision_convergence.png", dpi=110)
    final = {"sgd": {k: v[-1] for k, v in sgd.items()}, "adam": {k: v[-1] for k, v in adam.items()}}
    (DOCS / "_data" / "low_precision_convergence.json").write_text(
        json.dumps({"final": final, "sgd": sgd, "adam": adam}, indent=1)
    )
    print(json.dumps(final, indent=1))


if __name__ == "__main__":
    main()
