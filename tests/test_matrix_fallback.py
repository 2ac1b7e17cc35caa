"""What Muon and SOAP share through :class:`mxopt.optimizers.matrix.MatrixOptimizer`: the
``fallback`` optimizer of the weights that are not matrices, ``fallback_indices``, the
routing on every path (one index, lists, packed buffers, checkpoints), the state handed
to the fallback, and the config of both. Each test runs for both optimizers; what only
one of them does is in tests/test_muon.py and tests/test_soap.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import mxopt

CLASSES = [mxopt.Muon, mxopt.SOAP]
IDS = [cls.__name__ for cls in CLASSES]
#: options that make the matrices' own state change within a few steps (SOAP refreshes
#: its bases every 10 updates by default)
QUICK = {mxopt.Muon: {}, mxopt.SOAP: {"precondition_frequency": 2}}
MODEL = {"w1": (8, 5), "b1": (5,), "conv": (4, 2, 3, 3), "gain": (), "head": (5, 3),
         ("emb", 0): (6, 4)}  # fmt: skip
#: the state of AdamW(), the default fallback
FALLBACK_ARRAYS = {"mean", "var"}


def matrix_state(cls, shape) -> dict:
    """The state arrays' shapes that ``cls`` (at its defaults) gives a weight of ``shape``
    it updates as a ``(shape[0], -1)`` matrix."""
    if cls is mxopt.Muon:
        return {"momentum_buffer": shape}
    rows, cols = shape[0], int(np.prod(shape[1:]))
    return {"exp_avg": shape, "exp_avg_sq": shape, "precond_left": (rows, rows),
            "basis_left": (rows, rows), "precond_right": (cols, cols),
            "basis_right": (cols, cols)}  # fmt: skip


def _grads(rng, shapes):
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_vectors_go_to_the_fallback_with_its_own_options_bit_for_bit(cls):
    rng = np.random.default_rng(0)
    fallback_options = {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True}
    own_state, adam_state = mxopt.OptimizationState(1), mxopt.OptimizationState(1)
    own = mxopt.get_updater(cls(lr=0.3, fallback=mxopt.AdamW(**fallback_options),
                                state=own_state))  # fmt: skip
    adamw = mxopt.get_updater(mxopt.AdamW(**fallback_options, state=adam_state))
    w_own = rng.normal(size=33).astype(np.float32)
    w_adam = w_own.copy()
    for _ in range(5):
        grad = rng.normal(size=33).astype(np.float32)
        own_state.begin_batch()
        adam_state.begin_batch()
        own("b", grad, w_own)
        adamw("b", grad, w_adam)
    np.testing.assert_array_equal(w_own, w_adam)
    assert set(own.states["b"].arrays) == {"mean", "var", "max_var"}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_fallback_indices_route_exact_indices_and_patterns(cls):
    optimizer = cls(fallback_indices=["head", "*emb*", ("layer", 1)])
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
    updater = mxopt.get_updater(cls(fallback_indices=("head", "*emb*"), state=state))
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    state.begin_batch()
    updater.update_many(list(MODEL), list(_grads(rng, MODEL).values()), list(weights.values()))
    kinds = {k: set(s.arrays) for k, s in updater.states.items()}
    assert kinds == {
        "w1": set(matrix_state(cls, MODEL["w1"])), "conv": set(matrix_state(cls, MODEL["conv"])),
        "b1": FALLBACK_ARRAYS, "gain": FALLBACK_ARRAYS, "head": FALLBACK_ARRAYS,
        ("emb", 0): FALLBACK_ARRAYS,
    }  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_without_fallback_a_vector_is_an_error_naming_its_index_and_nothing_changes(cls):
    name = cls.__name__
    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(cls(fallback=None, state=state))
    rng = np.random.default_rng(0)
    matrix, bias = rng.normal(size=(4, 3)).astype(np.float32), np.ones(3, np.float32)
    before = matrix.copy()
    state.begin_batch()
    with pytest.raises(
        ValueError, match=rf"index 'bias'.*{name}\(fallback=None\).*not a matrix.*fallback"
    ):
        updater.update_many(["w", "bias"], [np.ones((4, 3), np.float32), np.ones(3, np.float32)],
                            [matrix, bias])  # fmt: skip
    np.testing.assert_array_equal(matrix, before)
    assert updater.states == {}
    with pytest.raises(ValueError, match=rf"index 'head'.*{name}\(fallback=None\).*in fallback_"):
        mxopt.create_state(cls(fallback=None, fallback_indices=["head"]), "head", matrix)
    updater("w", np.ones((4, 3), np.float32), matrix)  # matrices are fine
    assert set(updater.states["w"].arrays) == set(matrix_state(cls, (4, 3)))


def _train(cls, path, options, steps=6, seed=0, save_at=None, tmp_path=None):
    """MODEL trained by ``path``: "call" (one updater call per index), "many" or "buffer";
    with ``save_at``, saved after that many steps and resumed from the file."""
    rng = np.random.default_rng(seed)
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(cls(**options, state=state))
    starts = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    grads = [_grads(rng, MODEL) for _ in range(steps)]
    if path == "buffer":
        buffer = mxopt.ParameterBuffer.from_arrays(starts)
        weights = buffer.weights
    else:
        weights = {k: a.copy() for k, a in starts.items()}
    for step, g in enumerate(grads):
        if step == save_at:
            updater.save(tmp_path / "matrix.ckpt")
            saved, updater = updater, mxopt.load_updater(tmp_path / "matrix.ckpt")
            assert updater.optimizer == saved.optimizer
            state = updater.optimizer.state
        state.begin_batch()
        if path == "call":
            for k in MODEL:
                updater(k, g[k], weights[k])
        elif path == "many":
            updater.update_many(list(MODEL), [g[k] for k in MODEL], [weights[k] for k in MODEL])
        else:
            for k in MODEL:
                buffer.grads[k][...] = g[k]
            updater.update_buffer(buffer)
    return weights, updater


@pytest.mark.parametrize("options", [{}, {"fallback_indices": ("head",), "grad_clip": 0.5}])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_mixed_model_gives_the_same_bits_on_every_path(cls, options):
    options = {**QUICK[cls], **options}
    expected, reference = _train(cls, "call", options)
    shapes = {k: {n: a.shape for n, a in s.arrays.items()} for k, s in reference.states.items()}
    for k, shape in MODEL.items():
        if len(shape) >= 2 and k not in options.get("fallback_indices", ()):
            assert shapes[k] == matrix_state(cls, shape), k
        else:
            assert shapes[k] == dict.fromkeys(FALLBACK_ARRAYS, shape), k
    for path in ("many", "buffer"):
        weights, updater = _train(cls, path, options)
        for k in MODEL:
            np.testing.assert_array_equal(weights[k], expected[k], err_msg=f"{path} {k}")
            for name, array in reference.states[k].arrays.items():
                np.testing.assert_array_equal(updater.states[k].arrays[name], array)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_checkpoint_resumes_a_mixed_model_bit_for_bit(cls, tmp_path):
    options = {**QUICK[cls], "fallback_indices": ("head",),
               "fallback": mxopt.AdamW(lr=0.01, amsgrad=True)}  # fmt: skip
    expected, _ = _train(cls, "call", options)
    for save_at in (1, 3):  # after the first update (SOAP's set-up), and between refreshes
        weights, _ = _train(cls, "call", options, save_at=save_at, tmp_path=tmp_path)
        for k in MODEL:
            np.testing.assert_array_equal(weights[k], expected[k], err_msg=f"{save_at} {k}")


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_buffer_of_vectors_is_packed_for_the_fallback(cls):
    shapes = {"a": (7,), "b": (3,), "c": ()}
    results = []
    for packed in (True, False):
        state = mxopt.OptimizationState(1)
        updater = mxopt.get_updater(cls(state=state))
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
    assert (results[0] != np.linspace(-1, 1, results[0].size)).all()
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_lookahead_around_it_keeps_the_routing(cls):
    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(mxopt.Lookahead(cls(fallback_indices=["head"], state=state)))
    state.begin_batch()
    updater("head", np.ones((5, 3), np.float32), np.zeros((5, 3), np.float32))
    updater("w", np.ones((5, 3), np.float32), np.zeros((5, 3), np.float32))
    assert set(updater.states["head"].arrays) == FALLBACK_ARRAYS | {"lookahead_slow"}
    assert set(updater.states["w"].arrays) == set(matrix_state(cls, (5, 3))) | {"lookahead_slow"}


#: options of each optimizer's own, away from their defaults, for the config round trip
OWN_OPTIONS = {
    mxopt.Muon: {"ns_coefficients": [3.0, -3.2, 1.2], "adjust_lr": "match_rms_adamw"},
    mxopt.SOAP: {"shampoo_beta": 0.9, "precondition_frequency": 5, "max_precond_dim": 512,
                 "bias_correction": False},
}  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_config_round_trip(cls):
    optimizer = cls(
        **OWN_OPTIONS[cls], fallback=mxopt.Lion(lr=1e-4), fallback_indices=["head", ("emb", 0)],
        lr_scheduler=mxopt.LearningRate.Cosine(100, base_lr=0.02),
    )  # fmt: skip
    assert optimizer != cls(lr_scheduler=mxopt.LearningRate.Cosine(100, base_lr=0.02))
    config = mxopt.to_config(optimizer)
    assert mxopt.from_config(config) == optimizer
    assert mxopt.from_config(mxopt.dumps_config(optimizer, "toml")) == optimizer
    assert mxopt.from_config(mxopt.to_config(cls(fallback=None))).fallback is None


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_state_reaches_the_fallback(cls):
    state = mxopt.OptimizationState(1)
    assert cls(state=state).fallback.state is state
    inner = mxopt.AdamW(state=state)
    assert cls(fallback=inner).state is state
    optimizer = cls()
    optimizer.state = state
    assert optimizer.fallback.state is state
    assert cls().fallback is not cls().fallback  # a fresh AdamW each


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"fallback": "adamw"}, TypeError, r"{}: fallback must be an mxopt optimizer"),
        ({"fallback": mxopt.Muon()}, ValueError, r"{}: fallback must not itself be a Muon"),
        ({"fallback": mxopt.SOAP()}, ValueError, r"{}: fallback must not itself be a SOAP"),
        ({"fallback_indices": "head"}, TypeError, r"{}: fallback_indices must be a list or tuple"),
        ({"fallback_indices": [{"a": 1}]}, TypeError, r"{}: fallback_indices holds \{{'a': 1\}}"),
    ],
)
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_fallback_options_are_refused_with_a_clear_message(cls, options, error, match):
    assert_refused(cls, options, error, match.format(cls.__name__))


def assert_refused(cls, options, error, match):
    """``cls(**options)`` raises ``error`` matching ``match``, and so does setting the
    option on an optimizer, which keeps its value (tests/test_muon.py and test_soap.py
    check their own options with it)."""
    with pytest.raises(error, match=match):
        cls(**options)
    optimizer = cls()
    name, value = next(iter(options.items()))
    before = getattr(optimizer, name)
    with pytest.raises(error, match=match):
        setattr(optimizer, name, value)
    assert getattr(optimizer, name) == before
