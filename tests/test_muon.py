"""Muon beyond the generic tests: torch.optim.Muon on matrices, the float32 iteration's
precision, and its own options (the fallback optimizer and its routing, shared with SOAP,
are in tests/test_matrix_fallback.py).

torch.optim.Muon only takes 2-D weights (the shared agreement table uses 1-D ones), and
runs its Newton-Schulz iteration in bfloat16. So it is compared here on matrices, twice:
as shipped (a bound that scales with bfloat16's precision), and with its iteration run in
float32 (its own code, the ``bfloat16()`` cast made a copy), where the two must agree
within float32 rounding.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest

import mxopt
from tests.reference import muon as oracle
from tests.test_matrix_fallback import assert_refused

torch = pytest.importorskip("torch")
torch_muon = pytest.importorskip("torch.optim._muon")

STEPS = 50
#: (label, torch.optim.Muon options, mxopt.Muon options)
SETTINGS = [
    ("default", {}, {}),
    ("no-nesterov", {"nesterov": False, "lr": 0.02}, {"nesterov": False, "lr": 0.02}),
    (
        "match-rms-adamw",
        {"adjust_lr_fn": "match_rms_adamw", "lr": 0.01, "weight_decay": 0.01, "momentum": 0.9},
        {"adjust_lr": "match_rms_adamw", "lr": 0.01, "weight_decay": 0.01, "momentum": 0.9},
    ),
    (
        "steps-eps",
        {"ns_steps": 3, "eps": 1e-3, "weight_decay": 0.0, "lr": 0.005},
        {"ns_steps": 3, "epsilon": 1e-3, "weight_decay": 0.0, "lr": 0.005},
    ),
]
SHAPES = {"tall": (64, 32), "wide": (32, 64), "square": (48, 48), "conv": (16, 8, 3, 3)}
#: max |w_mxopt - w_torch| over 50 steps with torch's iteration in float32 (observed: at
#: most 7.2e-7, a few float32 ulps of weights of size ~1)
FLOAT32_TOLERANCE = 2e-6
#: torch's bfloat16 iteration (8 significant bits) is off by about 1e-2 (RMS) of each
#: update, in directions that change from step to step: the bound is 3e-3 of the path
#: length lr * s * steps (observed: 4.7e-4 to 1.3e-3 of it; 1e-5 with its float32 iteration).
BFLOAT16_FRACTION = 3e-3


@contextlib.contextmanager
def torch_iteration_in_float32():
    """torch.optim.Muon's own Newton-Schulz code, with its bfloat16 cast made a copy."""
    original = torch_muon._zeropower_via_newtonschulz

    def in_float32(grad, *args):
        with mock.patch.object(torch.Tensor, "bfloat16", lambda self: self.clone()):
            return original(grad, *args)

    with mock.patch.object(torch_muon, "_zeropower_via_newtonschulz", in_float32):
        yield


def torch_difference(shape, torch_options, mxopt_options, float32: bool, seed=0) -> float:
    """max |w_mxopt - w_torch| over STEPS updates of one float32 weight (batch_size=1);
    torch gets it as a (shape[0], -1) matrix, as mxopt sees it."""
    rng = np.random.default_rng(seed)
    start = rng.normal(size=shape).astype(np.float32)
    grads = [rng.normal(size=shape).astype(np.float32) for _ in range(STEPS)]
    grads[6][...] = 0  # a zero gradient: the momentum alone moves the weight
    param = torch.nn.Parameter(torch.tensor(start.reshape(shape[0], -1)))
    reference = torch.optim.Muon([param], **torch_options)
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.Muon(**mxopt_options, state=state))
    weight = start.copy()
    worst = 0.0
    with torch_iteration_in_float32() if float32 else contextlib.nullcontext():
        for grad in grads:
            param.grad = torch.tensor(grad.reshape(shape[0], -1))
            reference.step()
            state.begin_batch()
            updater("w", grad, weight)
            theirs = param.detach().numpy().reshape(shape)
            worst = max(worst, float(np.abs(theirs - weight).max()))
    return worst


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_matches_torch_with_its_iteration_in_float32(setting, shape):
    _, torch_options, mxopt_options = setting
    difference = torch_difference(shape, torch_options, mxopt_options, float32=True)
    assert difference <= FLOAT32_TOLERANCE, difference


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_matches_torch_as_shipped_within_bfloat16_precision(setting, shape):
    _, torch_options, mxopt_options = setting
    optimizer = mxopt.Muon(**mxopt_options)
    rows = shape[0]
    cols = int(np.prod(shape)) // rows
    path = optimizer.lr * oracle.lr_factor(rows, cols, optimizer.adjust_lr) * STEPS
    difference = torch_difference(shape, torch_options, mxopt_options, float32=False)
    assert difference <= BFLOAT16_FRACTION * path, (difference, path)


def test_defaults_are_torchs():
    import inspect

    torch_defaults = {
        k: p.default for k, p in inspect.signature(torch.optim.Muon).parameters.items()
    }
    optimizer = mxopt.Muon()
    assert optimizer.lr == torch_defaults["lr"]
    assert optimizer.weight_decay == torch_defaults["weight_decay"]
    assert optimizer.momentum == torch_defaults["momentum"]
    assert optimizer.nesterov == torch_defaults["nesterov"]
    assert optimizer.ns_coefficients == torch_defaults["ns_coefficients"]
    assert optimizer.epsilon == torch_defaults["eps"]
    assert optimizer.ns_steps == torch_defaults["ns_steps"]
    assert torch_defaults["adjust_lr_fn"] is None and optimizer.adjust_lr == "original"


# -- precision of the float32 iteration -------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (256, 96)])
def test_float32_iteration_is_close_to_the_float64_one(shape):
    """One step from zero state: the float32 update against the float64 oracle's, relative
    to the update's size (the iteration's output has singular values near 1)."""
    rng = np.random.default_rng(1)
    grad = rng.normal(size=shape)
    results = {}
    for dtype in (np.float32, np.float64):
        state = mxopt.OptimizationState(batch_size=1)
        state.begin_batch()
        updater = mxopt.get_updater(mxopt.Muon(lr=1.0, weight_decay=0.0, state=state))
        weight = np.zeros(shape, dtype)
        updater(0, grad.astype(dtype), weight)
        results[dtype] = weight.astype(np.float64)
    x = mxopt.Muon()
    expected = np.zeros(shape)
    ref = {"momentum_buffer": np.zeros(shape)}
    inputs = type("X", (), {**{a: getattr(x, a) for a in ("momentum", "nesterov", "ns_steps",
                                                       "ns_coefficients", "epsilon", "adjust_lr")},
                            "lr": 1.0, "weight_decay": 0.0, "grad_scale": 1.0, "batch_size": 1,
                            "grad_clip": 0.0, "maximize": False})  # fmt: skip
    oracle.step(expected, grad, ref, inputs)
    scale = np.abs(expected).max()
    assert np.abs(results[np.float64] - expected).max() <= 1e-13 * scale
    # float32 products: observed up to 4.7e-6 of the largest element (1.5e-6 in RMS) for
    # shapes up to 2048 x 1024; torch's bfloat16 iteration is off by ~1e-2 (RMS)
    assert np.abs(results[np.float32] - expected).max() <= 1e-5 * scale


# -- bad options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ns_coefficients": (1.0, 2.0)}, TypeError, r"ns_coefficients must be a tuple of three"),
        ({"ns_coefficients": 3.0}, TypeError, r"ns_coefficients must be a tuple of three"),
        ({"ns_coefficients": (1.0, "b", 2.0)}, TypeError, r"ns_coefficients must hold three"),
        ({"ns_coefficients": (1.0, float("nan"), 2.0)}, ValueError, r"three finite numbers"),
        ({"ns_steps": -1}, ValueError, r"ns_steps must be an integer >= 0, got -1"),
        ({"ns_steps": 100}, ValueError, r"ns_steps must be an integer from 0 to 99 .*got 100"),
        ({"ns_steps": 2.5}, TypeError, r"ns_steps must be an integer"),
        ({"adjust_lr": None}, ValueError, r"adjust_lr must be one of 'original', 'match_rms"),
        ({"adjust_lr": "rms"}, ValueError, r"adjust_lr must be one of .*got 'rms'"),
        ({"momentum": 1.0}, ValueError, r"Muon: momentum must be a finite number in \[0, 1\)"),
        ({"nesterov": 1}, TypeError, r"nesterov must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, error, match):
    assert_refused(mxopt.Muon, options, error, match)
