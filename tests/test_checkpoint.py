"""Checkpoints: exact resume for every optimizer, safe files, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import mxopt
from mxopt.training.checkpoint import CheckpointError, read_checkpoint
from tests.cases import CASES, make_optimizer

SHAPES = {"w": (3, 5), "b": (7,), 3: (1,)}


def _grads(rng, step):
    grads = {k: (rng.normal(size=s) * 2).astype(np.float32) for k, s in SHAPES.items()}
    if step == 2:
        grads["b"][...] = 0
    return grads


def _run(updater, weights, state, steps, seed, start=0):
    """``steps`` more updates of every weight; gradients depend only on (seed, step)."""
    for step in range(start, start + steps):
        rng = np.random.default_rng([seed, step])
        if step % 3 == 0:
            state.begin_epoch()
        state.begin_batch()
        for key, grad in _grads(rng, step).items():
            updater(key, grad, weights[key])


def _fresh(case, averaging=None):
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(
        make_optimizer(case, {"grad_clip": 0.7}, state), averaging=averaging
    )
    rng = np.random.default_rng(99)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    return updater, weights, state


def _bits(weights):
    return {k: w.view(np.uint32).copy() for k, w in weights.items()}


def _state_bits(updater):
    return {
        (k, name): np.ascontiguousarray(a).view(np.uint32).copy()
        for k, s in updater.states.items()
        for name, a in s.arrays.items()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resume_from_a_file_is_bit_identical(case, tmp_path):
    reference, ref_weights, ref_state = _fresh(case, averaging=mxopt.EMA(0.9))
    _run(reference, ref_weights, ref_state, 10, seed=1)

    first, weights, state = _fresh(case, averaging=mxopt.EMA(0.9))
    _run(first, weights, state, 4, seed=1)
    first.save(tmp_path / "run.ckpt")
    saved_weights = {k: w.copy() for k, w in weights.items()}
    resumed = mxopt.load_updater(tmp_path / "run.ckpt", weights=saved_weights)
    _run(resumed, saved_weights, resumed.optimizer.state, 6, seed=1, start=4)

    assert _bits(saved_weights).keys() == _bits(ref_weights).keys()
    for key in ref_weights:
        np.testing.assert_array_equal(_bits(saved_weights)[key], _bits(ref_weights)[key])
    ref_bits, resumed_bits = _state_bits(reference), _state_bits(resumed)
    assert ref_bits.keys() == resumed_bits.keys()
    for key in ref_bits:
        np.testing.assert_array_equal(resumed_bits[key], ref_bits[key], err_msg=str(key))
    assert resumed.optimizer == reference.optimizer
    assert resumed.optimizer.state == reference.optimizer.state


@pytest.mark.parametrize("case", CASES[::4], ids=[c.id for c in CASES[::4]])
def test_resume_in_memory_with_state_dict(case):
    reference, ref_weights, ref_state = _fresh(case)
    _run(reference, ref_weights, ref_state, 7, seed=2)

    first, weights, state = _fresh(case)
    _run(first, weights, state, 3, seed=2)
    snapshot = first.state_dict()
    snapshot_weights = {k: w.copy() for k, w in weights.items()}
    _run(first, weights, state, 2, seed=5, start=3)  # the snapshot holds copies: unaffected

    second, _, second_state = _fresh(case)
    second.load_state_dict(snapshot)
    assert second.optimizer.state is second_state  # restored in place: the loop keeps it
    _run(second, snapshot_weights, second_state, 4, seed=2, start=3)
    for key in ref_weights:
        np.testing.assert_array_equal(snapshot_weights[key], ref_weights[key])


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    case = next(c for c in CASES if c.optimizer == "ADAM")
    reference, ref_weights, ref_state = _fresh(case)
    _run(reference, ref_weights, ref_state, 9, seed=3)

    first, weights, state = _fresh(case)
    _run(first, weights, state, 5, seed=3)
    first.save(tmp_path / "run.ckpt")
    np.savez(tmp_path / "weights.npz", **{str(k): w for k, w in weights.items()})
    script = f"""
import numpy as np, mxopt
from tests.test_checkpoint import SHAPES, _run
saved = np.load({str(tmp_path / "weights.npz")!r})
weights = {{k: saved[str(k)].copy() for k in SHAPES}}
updater = mxopt.load_updater({str(tmp_path / "run.ckpt")!r}, weights=weights)
_run(updater, weights, updater.optimizer.state, 4, seed=3, start=5)
np.savez({str(tmp_path / "out.npz")!r}, **{{str(k): w for k, w in weights.items()}})
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npz")
    for key, w in ref_weights.items():
        np.testing.assert_array_equal(out[str(key)], w)


def test_loss_scaler_and_policies_are_restored(tmp_path):
    state = mxopt.OptimizationState(batch_size=1)
    scaler = mxopt.DynamicLossScaler(init_scale=1024.0, growth_interval=2)
    updater = mxopt.get_updater(
        mxopt.SGD(state=state), loss_scaler=scaler, max_grad_norm=5.0, nonfinite="skip"
    )
    weights = [np.ones(3, np.float32)]
    state.begin_epoch()
    for value in (1.0, np.inf, 1.0, 1.0):
        state.begin_batch()
        updater.update_many([0], [np.full(3, value, np.float32)], weights)
    updater.save(tmp_path / "s.ckpt")
    loaded = mxopt.load_updater(tmp_path / "s.ckpt")
    assert loaded.loss_scaler.state_dict() == scaler.state_dict()
    assert (loaded.max_grad_norm, loaded.nonfinite) == (5.0, "skip")
    assert loaded.states[0].skipped == 1 and loaded.states[0].step == 3


# -- safety -----------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    case = CASES[1]
    updater, weights, state = _fresh(case)
    _run(updater, weights, state, 3, seed=4)
    path = tmp_path / "good.ckpt"
    updater.save(path)
    return path, weights


def write_version_2(path, d: dict) -> None:
    """Write the state dict ``d`` as mxopt 0.2 wrote format 2: one JSON record per index,
    naming ``[member, offset, shape]`` in members of one state array name and dtype."""
    from mxopt.persist.archive import write_archive

    pieces, offsets, records = {}, {}, []
    for saved in d["states"]:
        places = {}
        for name, array in saved["arrays"].items():
            member = f"{name}.{array.dtype.name}"
            if array.dtype.name == "bfloat16":
                array = array.view(np.uint16)
            pieces.setdefault(member, []).append(array.reshape(-1))
            offset = offsets.get(member, 0)
            places[name] = [member, offset, list(array.shape)]
            offsets[member] = offset + array.size
        records.append({**saved, "arrays": places})
    arrays = {member: np.concatenate(parts) for member, parts in pieces.items()}
    write_archive(path, {**d, "version": 2, "states": records}, arrays)


@pytest.fixture
def checkpoint_v2(checkpoint):
    """The checkpoint of :func:`checkpoint` as format 2 wrote it (per-index records)."""
    path, weights = checkpoint
    write_version_2(path, read_checkpoint(path))
    return path, weights


def _rewrite(path, edit_header=None, drop=None, extra=None):
    """Rewrite a checkpoint with an edited header (and a valid checksum)."""
    from mxopt.persist.archive import _checksum

    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    header = json.loads(entries["header"].tobytes())
    if edit_header:
        edit_header(header)
    data = json.dumps(header, sort_keys=True).encode()
    arrays = {k: v for k, v in entries.items() if k not in ("header", "checksum")}
    for key in drop or ():
        arrays.pop(key)
    arrays.update(extra or {})
    entries = {
        "header": np.frombuffer(data, np.uint8),
        "checksum": np.frombuffer(_checksum(data, arrays).encode(), np.uint8),
        **arrays,
    }
    with open(path, "wb") as f:
        np.savez(f, **entries)


def test_truncated_file(checkpoint):
    path, _ = checkpoint
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        mxopt.load_updater(path)


def test_flipped_byte_is_caught(checkpoint):
    path, _ = checkpoint
    with np.load(path) as archive:
        key = next(k for k in archive.files if k not in ("header", "checksum"))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{key}.npy")
    position = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch|truncated or corrupted"):
        mxopt.load_updater(path)


def test_newer_format_version(checkpoint):
    path, _ = checkpoint
    _rewrite(path, lambda h: h.update(version=99))
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        mxopt.load_updater(path)


def test_unknown_optimizer(checkpoint):
    path, _ = checkpoint
    _rewrite(path, lambda h: h.update(optimizer_type="mxopt.Shampoo.v1"))
    with pytest.raises(CheckpointError, match="unknown optimizer 'mxopt.Shampoo.v1'"):
        mxopt.load_updater(path)


def test_state_that_does_not_match_the_weights(checkpoint):
    path, weights = checkpoint
    wrong = {k: np.zeros((2,) + w.shape, w.dtype) for k, w in weights.items()}
    with pytest.raises(CheckpointError, match="does not match the weights.*index 'w'"):
        mxopt.load_updater(path, weights=wrong)


def test_state_arrays_that_do_not_match_the_optimizer(checkpoint):
    path, _ = checkpoint

    def swap_optimizer(header):
        header["optimizer"] = mxopt.to_config(mxopt.SGD())
        header["optimizer_type"] = "mxopt.SGD.v1"

    _rewrite(path, swap_optimizer)
    with pytest.raises(CheckpointError, match="do not match what SGD"):
        mxopt.load_updater(path)


def test_missing_arrays(checkpoint):
    path, _ = checkpoint
    with np.load(path) as archive:
        key = next(k for k in archive.files if k not in ("header", "checksum"))
    _rewrite(path, drop=[key])
    with pytest.raises(CheckpointError, match="missing arrays"):
        mxopt.load_updater(path)


@pytest.mark.parametrize(
    "place",
    [["MEMBER", 10**9, [4, 3]], ["nowhere", 0, [4, 3]], ["MEMBER", -1, [1]],
     ["MEMBER", 0, [-4, -3]], ["MEMBER", 0.5, [1]], ["MEMBER", 0, [10**9]], "MEMBER", None],
)  # fmt: skip
def test_a_state_array_outside_its_packed_member_is_refused(checkpoint_v2, place):
    path, _ = checkpoint_v2

    def point_elsewhere(header):
        first = header["states"][0]["arrays"]
        name = next(iter(first))
        member = first[name][0]  # the real member, so only the offset or shape is wrong
        first[name] = json.loads(json.dumps(place).replace("MEMBER", member))

    _rewrite(path, point_elsewhere)
    with pytest.raises(CheckpointError, match="missing arrays"):
        mxopt.load_updater(path)


def test_many_small_indices_are_saved_in_a_few_members(tmp_path):
    # One member per state array name and dtype, whatever the number of indices, and the
    # columns of format 3 (every index an int: an int64 column).
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    rng = np.random.default_rng(0)
    weights = {}
    for k in range(300):
        dtype = np.float32 if k % 3 else np.float64
        weights[k] = rng.normal(size=(k % 5 + 1,)).astype(dtype)
        updater(k, rng.normal(size=weights[k].shape).astype(dtype), weights[k])
    updater.save(tmp_path / "many.ckpt")
    with np.load(tmp_path / "many.ckpt") as archive:
        assert sorted(archive.files) == sorted(
            ["header", "checksum", "mean.float32", "var.float32", "mean.float64", "var.float64",
             "states.index", "states.step", "states.skipped", "states.dtype", "states.ndim",
             "states.dims", "states.0.rows", "states.1.rows", "states.2.rows", "states.3.rows"]
        )  # fmt: skip
    loaded = mxopt.load_updater(tmp_path / "many.ckpt")
    for k, saved in updater.states.items():
        for name, array in saved.arrays.items():
            restored = loaded.states[k].arrays[name]
            assert restored.dtype == array.dtype
            np.testing.assert_array_equal(restored, array)


def test_pickled_objects_are_refused(checkpoint):
    path, _ = checkpoint
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["state0.evil"] = np.array([object()], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        mxopt.load_updater(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no header"):
        read_checkpoint(path)
    (tmp_path / "y").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        mxopt.load_updater(tmp_path / "y")


def test_a_crash_during_save_keeps_the_previous_checkpoint(checkpoint, monkeypatch):
    path, weights = checkpoint
    before = path.read_bytes()
    updater = mxopt.load_updater(path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        updater.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_unsaveable_index_is_a_clear_error(tmp_path):
    state = mxopt.OptimizationState(1, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.SGD(state=state))
    key = frozenset({1})
    updater(key, np.ones(2), np.ones(2))
    with pytest.raises(CheckpointError, match="frozenset"):
        updater.save(tmp_path / "x.ckpt")


def test_load_state_dict_checks_everything_before_changing_anything(checkpoint):
    path, _ = checkpoint
    d = read_checkpoint(path)
    d["states"][-1]["step"] = -1
    updater, weights, state = _fresh(CASES[1])
    _run(updater, weights, state, 2, seed=4)
    before = (dict(updater.states), state.curr_iter, updater.optimizer.opts)
    with pytest.raises(CheckpointError, match="step must be an integer from 0 to 2"):
        updater.load_state_dict(d)
    assert (dict(updater.states), state.curr_iter, updater.optimizer.opts) == before


def test_a_refused_load_leaves_the_given_optimizer_as_it_was(checkpoint):
    path, weights = checkpoint
    optimizer = make_optimizer(CASES[1], {"grad_clip": 0.7}, None)
    before = repr(optimizer)
    wrong = {k: np.zeros(w.shape + (1,), w.dtype) for k, w in weights.items()}
    with pytest.raises(CheckpointError, match="does not match the weights"):
        mxopt.load_updater(path, optimizer=optimizer, weights=wrong)
    assert optimizer.state is None and repr(optimizer) == before
    _rewrite(path, extra={"states.step": np.array([1, -1, 1], np.int64)})
    with pytest.raises(CheckpointError, match="step must be an integer from 0 to 2"):
        mxopt.load_updater(path, optimizer=optimizer)
    assert optimizer.state is None and repr(optimizer) == before


@pytest.mark.parametrize(
    "edit, message, records",
    [
        (lambda h: h["states"][0].update(step=10**400), "step must be an integer from 0 to 2",
         True),
        (lambda h: h["states"][0].update(skipped=2**63), "skipped must be an integer from 0",
         True),
        (lambda h: h["states"][0].update(extra=1), "the state record has keys", True),
        (lambda h: h["optimization_state"].pop("curr_iter"), r"missing \['curr_iter'\]", False),
        (lambda h: h["optimization_state"].update(when="now"), r"unknown \['when'\]", False),
        (lambda h: h.update(surprise=True), r"unknown entries \['surprise'\]", False),
    ],
    ids=["huge-step", "huge-skipped", "state-extra-key", "missing-counter", "state-extra",
         "header-extra"],
)  # fmt: skip
def test_out_of_schema_checkpoints_are_refused(checkpoint, edit, message, records):
    path, _ = checkpoint
    if records:  # format 2's per-index records (format 3: tests/test_checkpoint_columns.py)
        write_version_2(path, read_checkpoint(path))
    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=message):
        mxopt.load_updater(path)


def test_a_non_finite_float_index_is_refused(checkpoint):
    path, _ = checkpoint
    _rewrite(path, lambda h: h["states"]["indices"].__setitem__(0, {"float": float("inf")}))
    text = path.read_bytes()
    assert b"Infinity" in text  # JSON's extension, which Python's json reads by default
    with pytest.raises(CheckpointError, match="bad index record"):
        mxopt.load_updater(path)


def test_a_compressed_member_is_refused_before_it_is_unpacked(checkpoint, tmp_path):
    path, _ = checkpoint
    with np.load(path) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["bomb"] = np.zeros(64 << 20, np.uint8)  # 64 MiB of zeros: tiny once deflated
    bomb = tmp_path / "bomb.ckpt"
    with open(bomb, "wb") as f:
        np.savez_compressed(f, **entries)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="is compressed .* refused unread"):
        mxopt.load_updater(bomb)


def test_a_subset_of_a_checkpoint_is_written_and_read_back_as_saved(tmp_path):
    state = mxopt.OptimizationState(1, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    rng = np.random.default_rng(3)
    for index in ("a", "b", "c"):
        updater(index, rng.normal(size=4), rng.normal(size=4))
    updater.save(tmp_path / "all.ckpt")
    d = mxopt.read_checkpoint(tmp_path / "all.ckpt")
    assert [s["index"] for s in d["states"]] == [{"str": "a"}, {"str": "b"}, {"str": "c"}]
    d["states"] = [s for s in d["states"] if s["index"] != {"str": "b"}]
    mxopt.write_checkpoint(tmp_path / "some.ckpt", d)
    loaded = mxopt.load_updater(tmp_path / "some.ckpt")
    assert sorted(loaded.states) == ["a", "c"]
    for index in ("a", "c"):
        for name, array in updater.states[index].arrays.items():
            np.testing.assert_array_equal(loaded.states[index].arrays[name], array)
        assert loaded.states[index].step == updater.states[index].step == 1
