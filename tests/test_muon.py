"""Muon beyond the generic tests: torch.optim.Muon on matrices, the fallback optimizer and
its routing, options, and a mixed model through every path (list, buffer, checkpoint).

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


# -- the fallback -----------------------------------------------------------------------------

MODEL = {"w1": (8, 5), "b1": (5,), "conv": (4, 2, 3, 3), "gain": (), "head": (5, 3),
         ("emb", 0): (6, 4)}  # fmt: skip


def _grads(rng, shapes):
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_vectors_go_to_the_fallback_with_its_own_options_bit_for_bit():
    rng = np.random.default_rng(0)
    fallback_options = {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True}
    muon_state, adam_state = mxopt.OptimizationState(1), mxopt.OptimizationState(1)
    muon = mxopt.get_updater(mxopt.Muon(lr=0.3, fallback=mxopt.AdamW(**fallback_options),
                                        state=muon_state))  # fmt: skip
    adamw = mxopt.get_updater(mxopt.AdamW(**fallback_options, state=adam_state))
    w_muon = rng.normal(size=33).astype(np.float32)
    w_adam = w_muon.copy()
    for _ in range(5):
        grad = rng.normal(size=33).astype(np.float32)
        muon_state.begin_batch()
        adam_state.begin_batch()
        muon("b", grad, w_muon)
        adamw("b", grad, w_adam)
    np.testing.assert_array_equal(w_muon, w_adam)
    assert set(muon.states["b"].arrays) == {"mean", "var", "max_var"}


def test_fallback_indices_route_exact_indices_and_patterns():
    optimizer = mxopt.Muon(fallback_indices=["head", "*emb*", ("layer", 1)])
    assert optimizer.fallback_indices == ("head", "*emb*", ("layer", 1))
    assert not optimizer.is_matrix("head", (5, 3))
    assert not optimizer.is_matrix(("emb", 0), (6, 4))  # the pattern matches str(index)
    assert not optimizer.is_matrix("token_embedding", (6, 4))
    assert not optimizer.is_matrix(("layer", 1), (6, 4))
    assert optimizer.is_matrix(("layer", 2), (6, 4))
    assert optimizer.is_matrix("w1", (8, 5))
    assert not optimizer.is_matrix("w1", (8,))
    assert not optimizer.is_matrix("w1", ())

    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(mxopt.Muon(fallback_indices=("head", "*emb*"), state=state))
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    state.begin_batch()
    updater.update_many(list(MODEL), list(_grads(rng, MODEL).values()), list(weights.values()))
    kinds = {k: set(s.arrays) for k, s in updater.states.items()}
    assert kinds == {
        "w1": {"momentum_buffer"}, "conv": {"momentum_buffer"}, "b1": {"mean", "var"},
        "gain": {"mean", "var"}, "head": {"mean", "var"}, ("emb", 0): {"mean", "var"},
    }  # fmt: skip


def test_without_fallback_a_vector_is_an_error_naming_its_index_and_nothing_changes():
    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(mxopt.Muon(fallback=None, state=state))
    rng = np.random.default_rng(0)
    matrix, bias = rng.normal(size=(4, 3)).astype(np.float32), np.ones(3, np.float32)
    before = matrix.copy()
    state.begin_batch()
    with pytest.raises(ValueError, match=r"index 'bias'.*not a matrix.*fallback"):
        updater.update_many(["w", "bias"], [np.ones((4, 3), np.float32), np.ones(3, np.float32)],
                            [matrix, bias])  # fmt: skip
    np.testing.assert_array_equal(matrix, before)
    assert updater.states == {}
    with pytest.raises(ValueError, match=r"index 'head'.*in fallback_indices"):
        mxopt.create_state(mxopt.Muon(fallback=None, fallback_indices=["head"]), "head", matrix)
    updater("w", np.ones((4, 3), np.float32), matrix)  # matrices are fine
    assert set(updater.states["w"].arrays) == {"momentum_buffer"}


def _train(paths, optimizer_options, steps=4, seed=0):
    """MODEL trained by ``paths``: "call" (one updater call per index), "many" or "buffer"."""
    rng = np.random.default_rng(seed)
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(mxopt.Muon(**optimizer_options, state=state))
    starts = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    grads = [_grads(rng, MODEL) for _ in range(steps)]
    if paths == "buffer":
        buffer = mxopt.ParameterBuffer.from_arrays(starts)
        weights = buffer.weights
    else:
        weights = {k: a.copy() for k, a in starts.items()}
    for g in grads:
        state.begin_batch()
        if paths == "call":
            for k in MODEL:
                updater(k, g[k], weights[k])
        elif paths == "many":
            updater.update_many(list(MODEL), [g[k] for k in MODEL], [weights[k] for k in MODEL])
        else:
            for k in MODEL:
                buffer.grads[k][...] = g[k]
            updater.update_buffer(buffer)
    return weights, updater


@pytest.mark.parametrize("options", [{}, {"fallback_indices": ("head",), "grad_clip": 0.5}])
def test_a_mixed_model_gives_the_same_bits_on_every_path(options):
    expected, reference = _train("call", options)
    for path in ("many", "buffer"):
        weights, updater = _train(path, options)
        for k in MODEL:
            np.testing.assert_array_equal(weights[k], expected[k], err_msg=f"{path} {k}")
            for name, array in reference.states[k].arrays.items():
                np.testing.assert_array_equal(updater.states[k].arrays[name], array)


def test_a_buffer_of_vectors_is_packed_for_the_fallback():
    shapes = {"a": (7,), "b": (3,), "c": ()}
    rng = np.random.default_rng(0)
    results = []
    for packed in (True, False):
        state = mxopt.OptimizationState(1)
        updater = mxopt.get_updater(mxopt.Muon(state=state))
        buffer = mxopt.ParameterBuffer(shapes)
        buffer.weight[...] = np.linspace(-1, 1, buffer.weight.size)
        for step in range(3):
            grads = _grads(np.random.default_rng(step), shapes)
            state.begin_batch()
            if packed:
                for k, g in grads.items():
                    buffer.grads[k][...] = g
                updater.update_buffer(buffer)
            else:
                for k, g in grads.items():
                    updater(k, g, buffer.weights[k])
        if packed:
            assert updater._groups, "the buffer of vectors was not packed"
        results.append(buffer.weight.copy())
    np.testing.assert_array_equal(results[0], results[1])
    del rng


def test_checkpoint_resumes_a_mixed_model_bit_for_bit(tmp_path):
    options = {"fallback_indices": ("head",), "fallback": mxopt.AdamW(lr=0.01, amsgrad=True)}
    expected, _ = _train("call", options, steps=6)
    # 3 steps, save, load into a new updater, 3 more steps with the same gradients
    rng = np.random.default_rng(0)
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(mxopt.Muon(**options, state=state))
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    grads = [_grads(rng, MODEL) for _ in range(6)]
    for g in grads[:3]:
        state.begin_batch()
        for k in MODEL:
            updater(k, g[k], weights[k])
    updater.save(tmp_path / "muon.ckpt")
    resumed = mxopt.load_updater(tmp_path / "muon.ckpt")
    assert resumed.optimizer == updater.optimizer
    for g in grads[3:]:
        resumed.optimizer.state.begin_batch()
        for k in MODEL:
            resumed(k, g[k], weights[k])
    for k in MODEL:
        np.testing.assert_array_equal(weights[k], expected[k], err_msg=str(k))


def test_lookahead_around_muon_keeps_the_routing():
    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(mxopt.Lookahead(mxopt.Muon(fallback_indices=["head"], state=state)))
    state.begin_batch()
    updater("head", np.ones((5, 3), np.float32), np.zeros((5, 3), np.float32))
    updater("w", np.ones((5, 3), np.float32), np.zeros((5, 3), np.float32))
    assert set(updater.states["head"].arrays) == {"mean", "var", "lookahead_slow"}
    assert set(updater.states["w"].arrays) == {"momentum_buffer", "lookahead_slow"}


def test_config_round_trip():
    optimizer = mxopt.Muon(
        ns_coefficients=[3.0, -3.2, 1.2], fallback=mxopt.Lion(lr=1e-4),
        fallback_indices=["head", ("emb", 0)], adjust_lr="match_rms_adamw",
        lr_scheduler=mxopt.LearningRate.Cosine(100, base_lr=0.02),
    )  # fmt: skip
    config = mxopt.to_config(optimizer)
    assert mxopt.from_config(config) == optimizer
    assert mxopt.from_config(mxopt.dumps_config(optimizer, "toml")) == optimizer
    assert mxopt.from_config(mxopt.to_config(mxopt.Muon(fallback=None))).fallback is None


def test_the_state_reaches_the_fallback():
    state = mxopt.OptimizationState(1)
    assert mxopt.Muon(state=state).fallback.state is state
    inner = mxopt.AdamW(state=state)
    assert mxopt.Muon(fallback=inner).state is state
    optimizer = mxopt.Muon()
    optimizer.state = state
    assert optimizer.fallback.state is state
    assert mxopt.Muon().fallback is not mxopt.Muon().fallback  # a fresh AdamW each


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
        ({"fallback": "adamw"}, TypeError, r"fallback must be an mxopt optimizer"),
        ({"fallback": mxopt.Muon()}, ValueError, r"fallback must not itself be a Muon"),
        ({"fallback_indices": "head"}, TypeError, r"fallback_indices must be a list or tuple"),
        ({"fallback_indices": [{"a": 1}]}, TypeError, r"fallback_indices holds \{'a': 1\}"),
        ({"momentum": 1.0}, ValueError, r"Muon: momentum must be a finite number in \[0, 1\)"),
        ({"nesterov": 1}, TypeError, r"nesterov must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, error, match):
    with pytest.raises(error, match=match):
        mxopt.Muon(**options)
    optimizer = mxopt.Muon()
    name, value = next(iter(options.items()))
    before = getattr(optimizer, name)
    with pytest.raises(error, match=match):
        setattr(optimizer, name, value)
    assert getattr(optimizer, name) == before
