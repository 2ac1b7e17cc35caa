"""``update_many`` over lists of NumPy arrays in one compiled call (mxopt.training.lists).

The reference is always the same steps taken one weight at a time through
``updater(index, grad, weight)`` (whose kernels the oracle tests check): the list path
must give the same bits, refuse what the single path refuses with the same error, and
write nothing when it refuses.
"""

from __future__ import annotations

import numpy as np
import pytest

import mxopt
from mxopt.kernels import lists as list_kernels
from mxopt.kernels import threads
from mxopt.training.lists import ListPlan
from tests.parallel_tools import cut_everything

SHAPES = [(40, 25), (7,), (1,), (0,), (3, 4, 5), (1000,), (2, 1)]


def _model(rng, dtype=np.float32, shapes=SHAPES):
    names = [f"layer{k}" for k in range(len(shapes))]
    weights = [rng.normal(size=s).astype(dtype) for s in shapes]
    return names, weights


def _grads(rng, weights):
    return [rng.normal(size=w.shape).astype(w.dtype) for w in weights]


def _pair(make_optimizer, **policy):
    updaters = []
    for _ in range(2):
        state = mxopt.OptimizationState(batch_size=2)
        state.begin_epoch()
        updaters.append(mxopt.get_updater(make_optimizer(state), **policy))
    return updaters


def _step(updater, names, grads, weights):
    state = updater.optimizer.state
    state.begin_batch()
    return updater.update_many(names, grads, weights)


def _single_steps(updater, names, grads, weights):
    updater.optimizer.state.begin_batch()
    for name, grad, weight in zip(names, grads, weights, strict=True):
        updater(name, grad, weight)


class _Twins:
    """One model stepped two ways from the same gradients: ``many`` by ``update_many`` (the
    list path once the states exist) and ``single`` by one call per weight, the reference."""

    def __init__(self, seed, optimizer, dtype=np.float32):
        self.rng = np.random.default_rng(seed)
        self.names, self.many_weights = _model(self.rng, dtype)
        self.single_weights = [w.copy() for w in self.many_weights]
        self.many, self.single = _pair(OPTIMIZERS[optimizer])

    def step(self, change=None):
        """Both take a step from fresh gradients; ``update_many`` gets ``change(grads)`` (the
        same values in another form) when given. Returns what ``update_many`` returned."""
        grads = _grads(self.rng, self.many_weights)
        given = grads if change is None else change(grads)
        applied = _step(self.many, self.names, given, self.many_weights)
        _single_steps(self.single, self.names, grads, self.single_weights)
        return applied

    def assert_same_bits(self):
        _same_bits(self.many_weights, self.single_weights)


def _plan(updater, names) -> ListPlan:
    return updater._list_plans.get(tuple(names))


def _same_bits(a_list, b_list):
    for a, b in zip(a_list, b_list, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


def test_the_array_header_layout_is_understood():
    # The list path reads NumPy's array headers; with an unknown layout it turns itself
    # off (and update_many is slow again): this tells when a NumPy release changes it.
    assert list_kernels.AVAILABLE


OPTIMIZERS = {
    "ADAM": lambda state: mxopt.ADAM(lr=0.01, weight_decay=0.01, grad_clip=1.0, state=state),
    "AdamW": lambda state: mxopt.AdamW(lr=0.01, state=state),
    "SGD-momentum": lambda state: mxopt.SGD(lr=0.1, momentum=0.9, state=state),
    "SGD": lambda state: mxopt.SGD(lr=0.1, state=state),
    "RMSProp": lambda state: mxopt.RMSProp(lr=0.01, state=state),
}


@pytest.mark.parametrize("threads", ["serial", "cut"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_list_steps_give_the_bits_of_single_steps(name, dtype, threads, monkeypatch):
    if threads == "cut":
        cut_everything(monkeypatch)
    twins = _Twins(0, name, dtype)
    for _ in range(4):
        assert twins.step()
    many, single = twins.many, twins.single
    plan = _plan(many, twins.names)
    assert plan is not None and plan.kernel is not None  # the list path ran
    twins.assert_same_bits()
    for key in twins.names:
        assert many.states[key].step == single.states[key].step == 4
        _same_bits(many.states[key].flat.values(), single.states[key].flat.values())


LONG_SHAPES = [(3, 20_000), (7,), (45_001,), (0,), (4096,), (5,)]


@pytest.mark.parametrize("name", ["ADAM", "SGD-momentum"])
def test_long_arrays_are_shared_out_in_pieces_with_the_bits_of_single_steps(name, monkeypatch):
    # With 3 threads a share is 12,288 elements: the two long arrays are cut into pieces
    # (each keeping its own array's scalars), and a non-finite value in the last piece of
    # one is still found before anything is written.
    cut_everything(monkeypatch)
    sizes = np.array([int(np.prod(s)) for s in LONG_SHAPES], np.int64)
    source, start, pieces = list_kernels._cut(threads.pool(), sizes)
    assert pieces.sum() == sizes.sum() and pieces.max() <= 12_288 and source.size > 10
    twins = _Twins(1, name)
    twins.names, twins.many_weights = _model(twins.rng, shapes=LONG_SHAPES)
    twins.single_weights = [w.copy() for w in twins.many_weights]
    twins.many.set_lr_mult({"layer2": 0.5})
    twins.single.set_lr_mult({"layer2": 0.5})
    for _ in range(3):
        assert twins.step()
    assert _plan(twins.many, twins.names).kernel is not None  # the list path ran
    twins.assert_same_bits()
    before = [w.copy() for w in twins.many_weights]
    grads = _grads(twins.rng, twins.many_weights)
    grads[2][-1] = np.nan
    with pytest.raises(FloatingPointError, match="index 'layer2': grad holds 1"):
        _step(twins.many, twins.names, grads, twins.many_weights)
    _same_bits(twins.many_weights, before)


def test_per_index_learning_rate_multipliers_take_their_own_scalars():
    twins = _Twins(1, "ADAM")
    for updater in (twins.many, twins.single):
        updater.set_lr_mult({"layer1": 0.5, "layer4": 3.0})
        updater.set_wd_mult({"layer0": 0.0})
    for _ in range(3):
        twins.step()
    assert len(_plan(twins.many, twins.names).mults) == 4
    twins.assert_same_bits()


def test_an_option_change_is_seen_by_the_next_step():
    twins = _Twins(2, "SGD-momentum")
    for step in range(4):
        if step == 2:
            for updater in (twins.many, twins.single):
                updater.optimizer.opts.lr = 0.3
        twins.step()
    twins.assert_same_bits()


def test_an_option_that_needs_more_state_fails_before_any_write():
    rng = np.random.default_rng(3)
    names, weights = _model(rng)
    updater = mxopt.get_updater(mxopt.SGD(lr=0.1, state=mxopt.OptimizationState(1)))
    for _ in range(2):
        _step(updater, names, _grads(rng, weights), weights)
    before = [w.copy() for w in weights]
    updater.optimizer.opts.momentum = 0.9  # needs a velocity array the states do not have
    with pytest.raises(ValueError, match="needs state arrays"):
        _step(updater, names, _grads(rng, weights), weights)
    _same_bits(weights, before)
    assert all(updater.states[k].step == 2 for k in names)


def test_refused_members_get_the_single_paths_errors_and_nothing_is_written():
    rng = np.random.default_rng(4)
    names, weights = _model(rng)
    updater = mxopt.get_updater(OPTIMIZERS["ADAM"](mxopt.OptimizationState(1)))
    for _ in range(2):
        _step(updater, names, _grads(rng, weights), weights)
    assert _plan(updater, names).kernel is not None
    before = [w.copy() for w in weights]
    bad_members = {
        "wrong shape": lambda g: np.ones(g.shape + (1,), g.dtype),
        "wrong dtype": lambda g: g.astype(np.float64),
        "a list": lambda g: g.tolist(),
    }
    for why, make_bad in bad_members.items():
        grads = _grads(rng, weights)
        grads[4] = make_bad(grads[4])
        with pytest.raises((TypeError, ValueError), match="'layer4'"):
            updater.update_many(names, grads, weights)
        _same_bits(weights, before)
        assert all(updater.states[k].step == 2 for k in names), why
    read_only = [w.copy() for w in weights]
    read_only[0].flags.writeable = False
    with pytest.raises(ValueError, match="'layer0'"):
        updater.update_many(names, _grads(rng, weights), read_only)
    assert all(updater.states[k].step == 2 for k in names)


def test_non_finite_gradients_are_named_and_nothing_is_written():
    rng = np.random.default_rng(5)
    names, weights = _model(rng)
    updater = mxopt.get_updater(OPTIMIZERS["SGD-momentum"](mxopt.OptimizationState(1)))
    skipper = mxopt.get_updater(OPTIMIZERS["SGD-momentum"](mxopt.OptimizationState(1)),
                                nonfinite="skip")  # fmt: skip
    skipped_weights = [w.copy() for w in weights]
    for _ in range(2):
        grads = _grads(rng, weights)
        _step(updater, names, grads, weights)
        _step(skipper, names, grads, skipped_weights)
    before = [w.copy() for w in weights]
    grads = _grads(rng, weights)
    grads[5][17] = np.nan
    grads[0][3, 4] = -np.inf
    with pytest.raises(FloatingPointError, match="indices 'layer0', 'layer5': grad holds 2"):
        updater.update_many(names, grads, weights)
    _same_bits(weights, before)
    assert not skipper.update_many(names, grads, skipped_weights)
    _same_bits(skipped_weights, before)
    assert all(s.skipped == 1 and s.step == 2 for s in skipper.states.values())


class _Subclass(np.ndarray):
    pass


def test_non_contiguous_read_only_and_subclass_gradients_are_accepted_as_copies():
    def odd(grads):  # the plan exists: these members leave the compiled check
        odd = list(grads)
        odd[0] = np.asfortranarray(grads[0])
        odd[5] = np.repeat(grads[5], 2)[::2]
        odd[1] = grads[1].copy()
        odd[1].flags.writeable = False
        odd[2] = grads[2].view(_Subclass)
        return odd

    twins = _Twins(6, "ADAM")
    for step in range(3):
        twins.step(odd if step == 2 else None)
    twins.assert_same_bits()


def test_a_changed_list_of_states_is_planned_again():
    twins = _Twins(7, "ADAM")
    many, single, names = twins.many, twins.single, twins.names
    for _ in range(2):
        twins.step()
    # Restoring a state_dict replaces every state (and their arrays).
    many.load_state_dict(single.state_dict())
    twins.many_weights = [w.copy() for w in twins.single_weights]
    for _ in range(2):
        twins.step()
    twins.assert_same_bits()
    # Packing the weights in a buffer moves their states into its flat arrays.
    buffer = mxopt.ParameterBuffer.from_arrays(dict(zip(names, twins.many_weights, strict=True)))
    buffer.grad[:] = 0
    many.optimizer.state.begin_batch()
    many.update_buffer(buffer)
    single.optimizer.state.begin_batch()
    for name, weight in zip(names, twins.single_weights, strict=True):
        single(name, np.zeros_like(weight), weight)
    twins.many_weights = list(buffer.weight_list)
    twins.step()
    twins.assert_same_bits()


def test_update_counts_written_anywhere_else_are_read_again():
    # A list plan skips reading its states' update counts while no count was written
    # since its own last step; every other writer must make it read them again.
    twins = _Twins(8, "ADAM")
    many, single, names = twins.many, twins.single, twins.names
    for _ in range(2):
        twins.step()
    rng = np.random.default_rng(8)

    def both(index):  # one more step of a single weight, through a single call in each
        k = names.index(index)
        grad = rng.normal(size=twins.many_weights[k].shape).astype(np.float32)
        many(index, grad, twins.many_weights[k])
        single(index, grad, twins.single_weights[k])

    both("layer1")  # one weight ahead: the list's counts differ (the general path runs)
    twins.step()
    twins.assert_same_bits()
    for updater in (many, single):  # a count set by hand
        updater.states["layer2"].step = 10
    twins.step()
    twins.assert_same_bits()
    for name in names:
        assert many.states[name].step == single.states[name].step


def test_two_lists_of_the_same_weights_take_turns():
    # Each list's step moves the update counts the other list's plan holds. (The
    # reference steps after: its calls would make the plans read the counts anyway.)
    twins = _Twins(9, "ADAM")
    names, backwards = twins.names, twins.names[::-1]
    grads = [_grads(twins.rng, twins.many_weights) for _ in range(6)]
    for k, g in enumerate(grads):
        order = names if k % 2 == 0 else backwards
        weights = dict(zip(names, twins.many_weights, strict=True))
        _step(twins.many, order, [dict(zip(names, g, strict=True))[n] for n in order],
              [weights[n] for n in order])  # fmt: skip
    for g in grads:
        _single_steps(twins.single, names, g, twins.single_weights)
    assert _plan(twins.many, backwards).kernel is not None
    assert _plan(twins.many, names).kernel is not None
    twins.assert_same_bits()
    for name in names:
        assert twins.many.states[name].step == twins.single.states[name].step == 6


@pytest.mark.parametrize("count", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_compiled_count_of_non_finite_values_over_a_list(count, dtype):
    # Each array's read pass takes its four quarters at once, then its tail (sizes 0 to 39
    # here, most not multiples of 4): every value must be counted exactly once.
    rng = np.random.default_rng(count)
    arrays = [rng.normal(size=int(rng.integers(0, 40))).astype(dtype) for _ in range(count)]
    for array in arrays:
        spots = rng.random(array.size) < 0.2
        array[spots] = rng.choice([np.nan, np.inf, -np.inf], size=int(spots.sum()))
    expected = sum(int((~np.isfinite(a)).sum()) for a in arrays)
    data = np.array([a.ctypes.data for a in arrays], np.int64)
    sizes = np.array([a.size for a in arrays], np.int64)
    assert list_kernels.count_nonfinite(np.dtype(dtype), data, sizes) == expected
