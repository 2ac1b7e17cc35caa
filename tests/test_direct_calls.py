"""``updater(index, grad, weight)`` in one compiled call (mxopt.kernels.direct).

Small NumPy weights are stepped by a compiled call that reads both arrays' headers
itself. The reference is a twin updater with direct calls turned off (the plan's
checked Python path, which the oracle tests cover): the same bits, the same errors,
nothing written when a call is refused, and no trust in what an array was at an earlier
call (its shape, dtype, flags or memory may have changed since).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mxopt
from mxopt.kernels import direct

pytestmark = pytest.mark.filterwarnings("ignore::mxopt.StateNotAdvancedWarning")


def _updater(make, direct_calls: bool, monkeypatch, **policy):
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    state.begin_batch()
    with monkeypatch.context() as patch:
        if not direct_calls:
            patch.setattr(direct, "AVAILABLE", False)
        updater = mxopt.get_updater(make(state), **policy)
        return updater


class _Twins:
    """The same weights stepped with (``fast``) and without (``slow``) direct calls."""

    def __init__(self, monkeypatch, make, shape=(4, 4), dtype=np.float32, **policy):
        self.monkeypatch = monkeypatch
        self.rng = np.random.default_rng(0)
        self.fast = _updater(make, True, monkeypatch, **policy)
        self.slow = _updater(make, False, monkeypatch, **policy)
        self.w_fast = self.rng.normal(size=shape).astype(dtype)
        self.w_slow = self.w_fast.copy()

    def step(self, grad=None, fast_grad=None):
        if grad is None:
            grad = self.rng.normal(size=self.w_fast.shape).astype(self.w_fast.dtype)
        with self.monkeypatch.context() as patch:
            patch.setattr(direct, "AVAILABLE", False)
            expected = self.slow("w", grad, self.w_slow)
        got = self.fast("w", grad if fast_grad is None else fast_grad, self.w_fast)
        assert got == expected
        return got

    def same_bits(self):
        np.testing.assert_array_equal(self.w_fast.view(np.uint8), self.w_slow.view(np.uint8))
        for name, array in self.fast.states["w"].flat.items():
            other = self.slow.states["w"].flat[name]
            np.testing.assert_array_equal(array.view(np.uint8), other.view(np.uint8))


OPTIMIZERS = {
    "ADAM": lambda s: mxopt.ADAM(lr=0.01, weight_decay=0.01, grad_clip=1.0, state=s),
    "SGD-momentum": lambda s: mxopt.SGD(lr=0.1, momentum=0.9, nesterov=True, state=s),
    "Lion": lambda s: mxopt.Lion(lr=0.01, state=s),
    "RMSProp": lambda s: mxopt.RMSProp(lr=0.01, state=s),
}


def test_the_array_header_layout_is_understood():
    assert direct.AVAILABLE  # else every small update is slow again: a NumPy layout change


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(16,), (3, 5), (2, 3, 2, 2), (0,), (1,)])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_direct_calls_give_the_bits_of_the_checked_path(name, shape, dtype, monkeypatch):
    twins = _Twins(monkeypatch, OPTIMIZERS[name], shape, dtype)
    for _ in range(5):
        assert twins.step()
        twins.fast.optimizer.state.begin_batch()
        twins.slow.optimizer.state.begin_batch()
    assert twins.fast.states["w"].plan.direct is not None  # the direct call ran
    assert twins.slow.states["w"].plan.direct is None
    assert twins.fast.states["w"].step == 5
    twins.same_bits()


def test_weights_it_does_not_serve_keep_the_checked_path(monkeypatch):
    for shape in [(1, 1, 1, 1, 2), (direct.MAX_SIZE,)]:  # too many dimensions, too big
        twins = _Twins(monkeypatch, OPTIMIZERS["ADAM"], shape)
        for _ in range(2):
            twins.step()
        assert twins.fast.states["w"].plan.direct is None
        twins.same_bits()


def _stepped(monkeypatch, **policy):
    twins = _Twins(monkeypatch, OPTIMIZERS["ADAM"], **policy)
    for _ in range(2):
        twins.step()
    assert twins.fast.states["w"].plan.direct is not None
    return twins


def _refused_alike(twins, change):
    """``change(weight, grad) -> (weight, grad)`` applied to both twins' arrays: both refuse
    with the same error, and neither weights nor states change."""
    errors = []
    for updater, weight in ((twins.fast, twins.w_fast), (twins.slow, twins.w_slow)):
        grad = np.ones(weight.shape, weight.dtype)
        before = {k: a.copy() for k, a in updater.states["w"].flat.items()}
        original, kept = weight, weight.copy()
        weight, grad = change(weight, grad)
        with twins.monkeypatch.context() as patch:
            if updater is twins.slow:
                patch.setattr(direct, "AVAILABLE", False)
            with pytest.raises((TypeError, ValueError)) as error:
                updater("w", grad, weight)
        errors.append(str(error.value))
        np.testing.assert_array_equal(original.reshape(-1).view(np.uint8),
                                      kept.reshape(-1).view(np.uint8))  # fmt: skip
        for k, a in updater.states["w"].flat.items():
            np.testing.assert_array_equal(a, before[k])
    assert errors[0] == errors[1]
    return errors[0]


def _reshaped(weight, grad):
    weight.shape = (2, 8)  # the same object, its header changed in place
    return weight, grad


def _retyped(weight, grad):
    weight.dtype = np.int32  # same size, another dtype: nothing may be read as float32
    return weight, grad


def _read_only(weight, grad):
    weight.flags.writeable = False
    return weight, grad


@pytest.mark.parametrize(
    "change",
    [
        _reshaped,
        _retyped,
        _read_only,
        lambda w, g: (w, w),  # the gradient is the weight
        lambda w, g: (w, w.reshape(-1)[::-1].reshape(w.shape)),  # a view of the weight
        lambda w, g: (w, g.astype(np.float64)),
        lambda w, g: (w, g.reshape(2, 8)),
        lambda w, g: (w, g.tolist()),
        lambda w, g: (w.tolist(), g),
        lambda w, g: (w.astype(np.float64), g.astype(np.float64)),
        lambda w, g: (np.ma.masked_array(w), g),
    ],
    ids=[
        "reshaped",
        "retyped",
        "read-only",
        "grad-is-weight",
        "grad-views-weight",
        "grad-float64",
        "grad-shape",
        "grad-list",
        "weight-list",
        "float64",
        "masked",
    ],  # fmt: skip
)
def test_changed_or_wrong_arrays_are_refused_as_by_the_checked_path(change, monkeypatch):
    message = _refused_alike(_stepped(monkeypatch), change)
    assert "'w'" in message or "index w" in message


class _Subclass(np.ndarray):
    pass


@pytest.mark.parametrize(
    "change",
    [
        lambda g: np.asfortranarray(np.repeat(g[..., None], 2, axis=-1)[..., 0]),  # strided
        lambda g: g.view(_Subclass),
        lambda g: np.frombuffer(g.tobytes(), g.dtype).reshape(g.shape),  # read-only
        lambda g: g.copy().view(np.matrix) if g.ndim == 2 else g,
    ],
    ids=["strided", "subclass", "read-only", "matrix"],
)
def test_other_gradients_the_checked_path_accepts_give_the_same_bits(change, monkeypatch):
    twins = _stepped(monkeypatch)
    grad = twins.rng.normal(size=twins.w_fast.shape).astype(np.float32)
    assert twins.step(grad, change(grad.copy()))
    twins.same_bits()
    assert twins.step()  # and the direct call serves the next ordinary one
    twins.same_bits()


def test_a_new_array_object_or_memory_each_call_is_read_afresh(monkeypatch):
    twins = _stepped(monkeypatch)
    for _ in range(3):
        twins.w_fast = twins.w_fast.copy()  # new memory each step
        twins.step()
    twins.same_bits()
    big = np.zeros((3, 16), np.float32)
    big[1] = twins.w_fast.reshape(-1)
    twins.w_fast = big[1].reshape(4, 4)  # a view at an offset into other memory
    twins.step()
    twins.same_bits()
    assert np.all(big[0] == 0) and np.all(big[2] == 0)


@pytest.mark.parametrize("policy", ["raise", "skip", "apply"])
def test_non_finite_gradients_follow_the_policy(policy, monkeypatch):
    twins = _stepped(monkeypatch, nonfinite=policy)
    grad = np.ones((4, 4), np.float32)
    grad[1, 2] = np.nan
    w_before = twins.w_fast.copy()
    if policy == "raise":
        with pytest.raises(FloatingPointError, match="1 NaN or infinite value"):
            twins.fast("w", grad, twins.w_fast)
        np.testing.assert_array_equal(twins.w_fast, w_before)
        assert twins.fast.states["w"].step == 2
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        twins.step(grad)
    twins.same_bits()
    if policy == "skip":
        assert twins.fast.states["w"].step == 2 and twins.fast.states["w"].skipped == 1
    else:
        assert np.isnan(twins.w_fast[1, 2])
