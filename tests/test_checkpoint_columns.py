"""Checkpoint format 3: the states of every index as columns (mxopt.persist.columns)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import mxopt
from mxopt.persist.archive import _checksum
from mxopt.training.checkpoint import FORMAT_VERSION, CheckpointError, read_checkpoint
from tests.test_checkpoint import write_version_2

BF16 = np.dtype(ml_dtypes.bfloat16)


def _weights(wide=True):
    """Many indices of every kind, shapes (0-D, size 0, 1-D, 2-D, 3-D) and dtypes."""
    rng = np.random.default_rng(7)
    shapes = [(3,), (2, 5), (), (0,), (4, 1, 3), (7,)]
    dtypes = [np.float32, np.float64 if wide else np.float32, BF16, np.float32, np.float16]
    indices = [*range(40), "emb", ("blk", 2), ("blk", ("q", 1.5)), 2.5, None, -(2**40)]
    weights = {
        index: rng.normal(size=shapes[k % len(shapes)]).astype(dtypes[k % len(dtypes)])
        for k, index in enumerate(indices)
    }
    weights["big"] = rng.normal(size=(50, 90)).astype(np.float32)  # 8-bit state: large only
    return weights


def _trained(name, options=None, steps=3, accumulate=1, skip=()):
    options = options or {}
    state = mxopt.OptimizationState(batch_size=1)
    optimizer = mxopt.OPTIMIZERS[name](state=state, **options)
    updater = mxopt.get_updater(optimizer, accumulate=accumulate, nonfinite="skip")
    weights = _weights(wide="state_dtype" not in options)  # 8-bit state: float32 math
    rng = np.random.default_rng(1)
    for step in range(steps):
        state.begin_epoch()
        state.begin_batch()
        for k, (index, weight) in enumerate(weights.items()):
            if (step, k) in skip:
                continue
            grad = rng.normal(size=weight.shape).astype(weight.dtype)
            if step == 1 and k % 9 == 4:
                grad[...] = np.nan  # skipped: non-zero skip counts
            updater(index, grad, weight)
    return updater, weights


def _same_states(loaded, saved):
    assert list(loaded.states) == list(saved.states)
    for index, expected in saved.states.items():
        state = loaded.states[index]
        assert (state.step, state.skipped, state.memory) == (
            expected.step, expected.skipped, expected.memory
        ), index  # fmt: skip
        assert (tuple(state.shape), state.dtype) == (tuple(expected.shape), expected.dtype)
        assert state.arrays.keys() == expected.arrays.keys()
        for name, array in expected.arrays.items():
            got = state.arrays[name]
            assert (got.shape, got.dtype) == (array.shape, array.dtype), (index, name)
            assert got.tobytes() == array.tobytes(), (index, name)
    assert loaded.micro_steps == saved.micro_steps


VARIANTS = {
    "adam-master": ("ADAM", {"multi_precision": True}, 1),
    "adam-int8": ("ADAM", {"state_dtype": "int8", "multi_precision": True}, 1),
    "adam-bfloat16-state": ("ADAM", {"state_dtype": "bfloat16"}, 1),
    "nadam-memory": ("Nadam", {}, 1),
    "adafactor-factors": ("Adafactor", {}, 1),
    "sgd-accumulate": ("SGD", {"momentum_scheduler": mxopt.Momentum.Fixed(0.9)}, 2),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_many_mixed_indices_round_trip(variant, tmp_path):
    name, options, accumulate = VARIANTS[variant]
    # with accumulate=2 and an odd number of micro-steps some indices hold a "grad_sum"
    skip = {(2, k) for k in range(0, 50, 3)} if accumulate > 1 else ()
    updater, weights = _trained(name, options, accumulate=accumulate, skip=skip)
    updater.save(tmp_path / "run.ckpt")
    with np.load(tmp_path / "run.ckpt") as archive:
        header = json.loads(archive["header"].tobytes())
    assert header["version"] == FORMAT_VERSION == 3
    assert isinstance(header["states"]["indices"], list)  # not all ints: JSON
    loaded = mxopt.load_updater(tmp_path / "run.ckpt", weights=weights)
    _same_states(loaded, updater)
    # read_checkpoint gives the records of updater_state_dict, and writes back the same
    d = read_checkpoint(tmp_path / "run.ckpt")
    mxopt.write_checkpoint(tmp_path / "again.ckpt", d)
    assert len(d["states"]) == len(updater.states) and d["states"].columns is not None
    _same_states(mxopt.load_updater(tmp_path / "again.ckpt"), updater)
    expected = updater.state_dict()["states"]
    for got, want in zip(d["states"], expected, strict=True):
        assert got.keys() == want.keys()
        assert {k: got[k] for k in got if k != "arrays"} == {
            k: want[k] for k in want if k != "arrays"
        }  # fmt: skip
        for array_name, array in want["arrays"].items():
            assert got["arrays"][array_name].tobytes() == array.tobytes()
            assert got["arrays"][array_name].shape == array.shape
    # a dict from updater_state_dict writes the same file contents
    mxopt.write_checkpoint(tmp_path / "dict.ckpt", updater.state_dict())
    _same_states(mxopt.load_updater(tmp_path / "dict.ckpt"), updater)


def test_resuming_from_columns_continues_bit_for_bit(tmp_path):
    reference, ref_weights = _trained("ADAM", {"multi_precision": True}, steps=4)
    first, weights = _trained("ADAM", {"multi_precision": True}, steps=3)
    first.save(tmp_path / "run.ckpt")
    resumed = mxopt.load_updater(tmp_path / "run.ckpt", weights=weights)
    state = resumed.optimizer.state
    rng = np.random.default_rng(1)
    for _ in range(3):  # the gradients _trained drew for its first three steps
        for weight in weights.values():
            rng.normal(size=weight.shape)
    state.begin_epoch()
    state.begin_batch()
    for index, weight in weights.items():
        resumed(index, rng.normal(size=weight.shape).astype(weight.dtype), weight)
    for index, weight in ref_weights.items():
        assert weights[index].tobytes() == weight.tobytes(), index
    _same_states(resumed, reference)


def test_integer_indices_are_an_int64_column(tmp_path):
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    for index in (5, -3, 2**62, 0):
        updater(index, np.ones(2, np.float32), np.ones(2, np.float32))
    updater.save(tmp_path / "ints.ckpt")
    with np.load(tmp_path / "ints.ckpt") as archive:
        assert json.loads(archive["header"].tobytes())["states"]["indices"] is None
        assert archive["states.index"].tolist() == [5, -3, 2**62, 0]
    assert list(mxopt.load_updater(tmp_path / "ints.ckpt").states) == [5, -3, 2**62, 0]


def test_an_empty_updater_round_trips(tmp_path):
    updater = mxopt.get_updater(mxopt.ADAM(state=mxopt.OptimizationState(batch_size=1)))
    updater.save(tmp_path / "empty.ckpt")
    assert mxopt.load_updater(tmp_path / "empty.ckpt").states == {}


def test_a_version_2_file_still_loads(tmp_path):
    for name, options, _ in list(VARIANTS.values())[:4]:
        updater, weights = _trained(name, options)
        write_version_2(tmp_path / "old.ckpt", updater.state_dict())
        with np.load(tmp_path / "old.ckpt") as archive:
            header = json.loads(archive["header"].tobytes())
        assert header["version"] == 2 and isinstance(header["states"], list)
        _same_states(mxopt.load_updater(tmp_path / "old.ckpt", weights=weights), updater)
        d = read_checkpoint(tmp_path / "old.ckpt")
        mxopt.write_checkpoint(tmp_path / "new.ckpt", d)  # rewritten as format 3
        _same_states(mxopt.load_updater(tmp_path / "new.ckpt"), updater)


# -- corrupt columns ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    updater, _ = _trained("Nadam", {})
    path = tmp_path_factory.mktemp("columns") / "good.ckpt"
    updater.save(path)
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _corrupt(saved, path, edit_header=None, members=None, drop=()):
    """Write ``saved`` with its header and members edited, under a valid checksum."""
    header = json.loads(saved["header"].tobytes())
    if edit_header:
        edit_header(header["states"])
    arrays = {k: v for k, v in saved.items() if k not in ("header", "checksum", *drop)}
    arrays.update(members or {})
    data = json.dumps(header).encode()
    checksum = _checksum(data, arrays).encode()
    with open(path, "wb") as f:
        np.savez(f, header=np.frombuffer(data, np.uint8),
                 checksum=np.frombuffer(checksum, np.uint8), **arrays)  # fmt: skip


def _with(saved, key, change):
    column = saved[key].copy()
    change(column)
    return {key: column}


def _mean_member(saved):
    return next(k for k in saved if k.startswith("mean."))


CORRUPTIONS = {
    "sizes-not-summing": (
        lambda s: ({}, {_mean_member(s): s[_mean_member(s)][:-1]}, ()),
        r"holds \d+ values, but the sizes of its \d+ state arrays sum to",
    ),
    "negative-dims": (
        lambda s: ({}, _with(s, "states.dims", lambda c: c.__setitem__(0, -3)), ()),
        "negative dimension -3",
    ),
    "huge-dims": (
        lambda s: ({}, _with(s, "states.dims", lambda c: c.__setitem__(slice(None), 2**40)), ()),
        "is too large",
    ),
    "negative-ndim": (
        lambda s: ({}, _with(s, "states.ndim", lambda c: c.__setitem__(1, -1)), ()),
        "bad number of dimensions -1",
    ),
    "negative-step": (
        lambda s: ({}, _with(s, "states.step", lambda c: c.__setitem__(2, -1)), ()),
        r"state 2 \(index 2\): step must be an integer from 0 to 2",
    ),
    "count-too-big": (
        lambda s: ({}, {"states.skipped": s["states.skipped"].astype(np.uint64) + 2**63}, ()),
        "'states.skipped' must be .* int64 values, got uint64",
    ),
    "short-column": (
        lambda s: ({}, {"states.step": s["states.step"][:-1]}, ()),
        "'states.step' must be 47 int64 values",
    ),
    "missing-member": (lambda s: ({}, {}, ("states.skipped",)), "missing arrays"),
    "missing-data": (lambda s: ({}, {}, (_mean_member(s),)), "missing arrays"),
    "extra-member": (lambda s: ({}, {"surprise": np.zeros(1)}, ()), "unexpected members"),
    "bad-dtype-code": (
        lambda s: ({}, _with(s, "states.dtype", lambda c: c.__setitem__(0, 9)), ()),
        "bad dtype code 9",
    ),
    "unknown-dtype": (
        lambda s: (lambda t: t["dtypes"].__setitem__(0, "int32"), {}, ()),
        "weight dtypes .* must be float32",
    ),
    "count-off": (
        lambda s: (lambda t: t.update(count=t["count"] + 1), {}, ()),
        "47 indices for 48 states",
    ),
    "index-twice": (
        lambda s: (lambda t: t["indices"].__setitem__(1, t["indices"][0]), {}, ()),
        "index 0: saved twice",
    ),
    "nan-index": (
        lambda s: (lambda t: t["indices"].__setitem__(0, {"float": float("nan")}), {}, ()),
        "bad index record",
    ),
    "table-extra-key": (
        lambda s: (lambda t: t.update(offsets=[]), {}, ()),
        r"bad 'states' table: keys",
    ),
    "memory-not-floats": (
        lambda s: (lambda t: t["memory"][0][1].update(mu_product="x"), {}, ()),
        "memory must map names to floats",
    ),
    "memory-rows-unordered": (
        lambda s: (lambda t: t["memory"].reverse(), {}, ()),
        "bad memory entry",
    ),
    "array-listed-twice": (
        lambda s: (lambda t: t["arrays"].append(dict(t["arrays"][0])), {}, ()),
        "listed twice",
    ),
    "wrong-data-dtype": (
        lambda s: ({}, {_mean_member(s): s[_mean_member(s)].astype(np.int32)}, ()),
        "not float",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_columns_are_refused_and_nothing_changes(corruption, saved, tmp_path):
    make, message = CORRUPTIONS[corruption]
    edit, members, drop = make(saved)
    path = tmp_path / "bad.ckpt"
    _corrupt(saved, path, edit or None, members, drop)
    with pytest.raises(CheckpointError, match=message):
        mxopt.load_updater(path)
    updater, _ = _trained("Nadam", {}, steps=1)
    before = ({i: (s, s.step, s.arrays["mean"].tobytes()) for i, s in updater.states.items()},
              updater.optimizer.opts, updater.optimizer.state.curr_iter)  # fmt: skip
    with pytest.raises(CheckpointError, match=message):
        updater.load_state_dict(read_checkpoint(path))
    after = ({i: (s, s.step, s.arrays["mean"].tobytes()) for i, s in updater.states.items()},
             updater.optimizer.opts, updater.optimizer.state.curr_iter)  # fmt: skip
    assert after == before


def test_an_edited_record_is_loaded_as_edited(tmp_path):
    updater, _ = _trained("ADAM", {})
    updater.save(tmp_path / "run.ckpt")
    d = read_checkpoint(tmp_path / "run.ckpt")
    d["states"][3]["step"] = 99
    loaded = mxopt.get_updater(mxopt.ADAM(state=mxopt.OptimizationState(batch_size=1)))
    loaded.load_state_dict(d)
    assert loaded.states[3].step == 99
    d["states"][4]["step"] = -1
    with pytest.raises(CheckpointError, match="step must be an integer from 0 to 2"):
        loaded.load_state_dict(d)
    assert loaded.states[4].step == updater.states[4].step


def test_states_loaded_from_one_dict_share_no_memory(tmp_path):
    updater, _ = _trained("Nadam", {})
    updater.save(tmp_path / "run.ckpt")
    d = read_checkpoint(tmp_path / "run.ckpt")
    first, second = (mxopt.get_updater(mxopt.Nadam(state=mxopt.OptimizationState(1)))
                     for _ in range(2))  # fmt: skip
    first.load_state_dict(d)
    second.load_state_dict(d)
    for index, state in first.states.items():
        for name, array in state.flat.items():
            assert not np.shares_memory(array, second.states[index].flat[name])
            assert not np.shares_memory(array, d["states"][0]["arrays"][name])
        assert state.memory == second.states[index].memory
        assert state.memory is not second.states[index].memory
