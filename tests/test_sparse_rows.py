"""Row-sparse gradients (``mxopt.RowSparse``): lazy updates of the touched rows only.

Checked against a float64 oracle of lazy updates (tests/reference/sparse_adam.py's
``lazy_step``: duplicates summed, then each optimizer's own dense oracle on the touched
rows), against torch.optim.SparseAdam and torch.optim.Adagrad on sparse gradients, and
for what must hold bit for bit: untouched rows and their state, the dense kernel's bits
on the touched rows, the densified path, checkpoints, threads and the (emulated) GPU.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cuda as _cuda
from tests import cuda_tools
from tests.cases import TOLERANCE, oracle_inputs
from tests.parallel_tools import cut_everything, cut_nothing
from tests.reference import ORACLES
from tests.reference.sparse_adam import lazy_step

BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}

#: Lazy configurations: (label, optimizer name, options).
LAZY = {
    "SparseAdam": ("SparseAdam", {"lr": 0.05}),
    "SparseAdam-decoupled": ("SparseAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    "ADAM": ("ADAM", {"lazy_update": True, "lr": 0.01, "weight_decay": 0.05}),
    "ADAM-amsgrad-clip": ("ADAM", {"lazy_update": True, "amsgrad": True, "grad_clip": 0.5}),
    "AdamW": ("AdamW", {"lazy_update": True, "weight_decay": 0.1}),
    "SGD": ("SGD", {"lazy_update": True, "lr": 0.1}),
    "SGD-momentum": ("SGD", {"lazy_update": True, "momentum": 0.9, "dampening": 0.2}),
    "SGD-nesterov": ("SGD", {"lazy_update": True, "momentum": 0.8, "nesterov": True}),
    "AdaGrad": ("AdaGrad", {"lazy_update": True, "lr_decay": 0.1, "weight_decay": 0.01}),
}


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(BITS[a.dtype]) if a.dtype in BITS else a


def assert_same_bits(actual, expected, message=""):
    np.testing.assert_array_equal(bits(actual), bits(expected), err_msg=message)


def sparse_batches(rng, rows, shape, steps, *, dtype=np.float32):
    """``steps`` (rows, values) pairs: duplicates in most, an empty one, one of every row."""
    out = []
    for step in range(steps):
        if step == 2:
            picked = np.zeros(0, dtype=np.int64)
        elif step == 4:
            picked = rng.permutation(rows)
        else:
            picked = rng.integers(0, rows, size=rng.integers(1, 2 * rows // 3))
        values = (rng.normal(size=(picked.size, *shape[1:])) * 2).astype(dtype)
        out.append((picked, values))
    return out


def make(name, options, state):
    return mxopt.OPTIMIZERS[name](**options, state=state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(13, 3), (9, 2, 5), (6,)], ids=["2d", "3d", "1d"])
@pytest.mark.parametrize("label", LAZY)
def test_lazy_updates_follow_the_oracle_and_leave_other_rows_alone(label, shape, dtype):
    name, options = LAZY[label]
    oracle = ORACLES[name]
    rng = np.random.default_rng(3)
    state = mxopt.OptimizationState(batch_size=2)
    optimizer = make(name, options, state)
    updater = mxopt.get_updater(optimizer)
    weight = rng.normal(size=shape).astype(dtype)
    reference = weight.astype(np.float64)
    reference_state = None
    state.begin_epoch()
    for k, (rows, values) in enumerate(sparse_batches(rng, shape[0], shape, 7, dtype=dtype), 1):
        state.begin_batch()
        before = weight.copy()
        before_state = {n: a.copy() for n, a in updater.states[0].arrays.items()} if k > 1 else {}
        given = (rows.copy(), values.copy())
        assert updater(0, mxopt.RowSparse(rows, values), weight)
        assert_same_bits(rows, given[0])  # the caller's arrays are only read
        assert_same_bits(values, given[1])
        x = oracle_inputs(optimizer, state, k, dtype)
        if reference_state is None:
            reference_state = oracle.init(shape, x)
        lazy_step(oracle.step, reference, rows, values, reference_state, x)
        rtol, atol = TOLERANCE[dtype]
        np.testing.assert_allclose(weight, reference, rtol=rtol, atol=atol, err_msg=f"step {k}")
        wstate = updater.states[0]
        assert wstate.step == k
        for n, expected in reference_state.items():
            np.testing.assert_allclose(wstate.arrays[n], expected, rtol=rtol, atol=atol,
                                       err_msg=f"{n}, step {k}")  # fmt: skip
        untouched = np.setdiff1d(np.arange(shape[0]), rows)
        assert_same_bits(weight[untouched], before[untouched], f"weight, step {k}")
        for n, a in before_state.items():
            assert_same_bits(wstate.arrays[n][untouched], a[untouched], f"{n}, step {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("label", LAZY)
def test_touching_every_row_once_gives_the_dense_kernels_bits(label, dtype):
    name, options = LAZY[label]
    rng = np.random.default_rng(1)
    shape = (11, 4)
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    lazy, dense = (mxopt.get_updater(make(name, options, state)) for _ in range(2))
    w_lazy = rng.normal(size=shape).astype(dtype)
    w_dense = w_lazy.copy()
    for _ in range(4):
        state.begin_batch()
        grad = rng.normal(size=shape).astype(dtype)
        order = rng.permutation(shape[0])
        lazy("e", mxopt.RowSparse(order, grad[order]), w_lazy)
        dense("e", grad, w_dense)
    assert_same_bits(w_lazy, w_dense)
    for n, a in dense.states["e"].arrays.items():
        assert_same_bits(lazy.states["e"].arrays[n], a, n)


def test_duplicate_rows_are_summed_in_their_order():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(5, 3)).astype(np.float32)
    rows = np.array([4, 1, 4, 4, 1])
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    a, b = (mxopt.get_updater(mxopt.SparseAdam(state=state)) for _ in range(2))
    w_a = rng.normal(size=(6, 3)).astype(np.float32)
    w_b = w_a.copy()
    a(0, mxopt.RowSparse(rows, values), w_a)
    summed = np.stack([values[1] + values[4], (values[0] + values[2]) + values[3]])
    b(0, mxopt.RowSparse(np.array([1, 4], dtype=np.int32), summed), w_b)
    assert_same_bits(w_a, w_b)
    for n in ("mean", "var"):
        assert_same_bits(a.states[0].arrays[n], b.states[0].arrays[n])


@pytest.mark.parametrize("name", ["ADAM", "SGD", "AdaGrad", "Lion", "LAMB"])
def test_without_lazy_update_the_rows_are_scattered_into_a_dense_gradient(name):
    rng = np.random.default_rng(4)
    shape = (8, 5)
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    options = {"momentum": 0.9} if name == "SGD" else {}
    sparse, dense = (mxopt.get_updater(make(name, options, state)) for _ in range(2))
    w_sparse = rng.normal(size=shape).astype(np.float32)
    w_dense = w_sparse.copy()
    for _ in range(3):
        state.begin_batch()
        rows = rng.integers(0, shape[0], size=5)
        values = rng.normal(size=(5, 5)).astype(np.float32)
        grad = np.zeros(shape, np.float32)
        for r, v in zip(rows, values, strict=True):  # summed in rows' order (0 + v is v)
            grad[r] += v
        sparse(0, mxopt.RowSparse(rows, values), w_sparse)
        dense(0, grad, w_dense)
    assert_same_bits(w_sparse, w_dense)


def test_torch_sparse_adam_agrees_over_50_steps_on_an_embedding():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    rows_count, dim = 100, 16
    start = rng.normal(size=(rows_count, dim)).astype(np.float32)
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.SparseAdam(lr=1e-2, beta1=0.8, beta2=0.99, epsilon=1e-6,
                                                 state=state))  # fmt: skip
    weight = start.copy()
    embedding = torch.nn.Embedding(rows_count, dim, sparse=True)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(start))
    optimizer = torch.optim.SparseAdam(embedding.parameters(), lr=1e-2, betas=(0.8, 0.99),
                                       eps=1e-6)  # fmt: skip
    state.begin_epoch()
    worst = 0.0
    for _ in range(50):
        ids = rng.integers(0, rows_count, size=32)  # duplicates are common
        target = rng.normal(size=(32, dim)).astype(np.float32)
        optimizer.zero_grad()
        out = embedding(torch.from_numpy(ids))
        ((out - torch.from_numpy(target)) ** 2).sum().mul(0.5).backward()
        grad = embedding.weight.grad  # sparse, uncoalesced: one row per id
        indices = grad._indices()[0].numpy()
        values = grad._values().numpy()
        state.begin_batch()
        updater("embedding", mxopt.RowSparse(indices, values), weight)
        optimizer.step()
        worst = max(worst, float(np.abs(weight - embedding.weight.detach().numpy()).max()))
    assert worst < 1e-5, worst
    moments = optimizer.state[embedding.weight]
    np.testing.assert_allclose(updater.states["embedding"].arrays["mean"],
                               moments["exp_avg"].numpy(), atol=1e-6)  # fmt: skip
    assert updater.states["embedding"].step == int(moments["step"])


def test_torch_adagrad_on_sparse_gradients_is_the_lazy_adagrad():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    start = rng.normal(size=(40, 6)).astype(np.float32)
    state = mxopt.OptimizationState(batch_size=1)
    optimizer = mxopt.AdaGrad(lr=0.05, lr_decay=0.01, epsilon=1e-10, epsilon_inside_sqrt=False,
                              weight_decay=0.0, lazy_update=True, state=state)  # fmt: skip
    updater = mxopt.get_updater(optimizer)
    weight = start.copy()
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    peer = torch.optim.Adagrad([param], lr=0.05, lr_decay=0.01, eps=1e-10)
    state.begin_epoch()
    worst = 0.0
    for _ in range(50):
        rows = rng.integers(0, 40, size=12)
        values = rng.normal(size=(12, 6)).astype(np.float32)
        state.begin_batch()
        updater(0, mxopt.RowSparse(rows, values), weight)
        param.grad = torch.sparse_coo_tensor(torch.from_numpy(rows)[None],
                                             torch.from_numpy(values), (40, 6),
                                             check_invariants=True)  # fmt: skip
        peer.step()
        worst = max(worst, float(np.abs(weight - param.detach().numpy()).max()))
    assert worst < 1e-5, worst


# -- errors: clear, and nothing modified -------------------------------------------------


def test_construction_errors():
    values = np.zeros((3, 2), np.float32)
    with pytest.raises(TypeError, match="rows must hold integers"):
        mxopt.RowSparse(np.array([0.0, 1.0, 2.0]), values)
    with pytest.raises(TypeError, match="rows must be a 1-D integer"):
        mxopt.RowSparse([0, 1, 2], values)
    with pytest.raises(ValueError, match="rows must be 1-D"):
        mxopt.RowSparse(np.zeros((3, 1), np.int64), values)
    with pytest.raises(ValueError, match=r"one row per entry of rows: shape \(2, "):
        mxopt.RowSparse(np.array([0, 1]), values)
    with pytest.raises(TypeError, match="values dtype int64 is not supported"):
        mxopt.RowSparse(np.array([0, 1, 2]), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="one row per entry"):
        mxopt.RowSparse(np.array([0]), np.ones((), np.float32))
    assert "3 rows" in repr(mxopt.RowSparse(np.array([0, 1, 2]), values))


def _updated_once():
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.SparseAdam(state=state))
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    updater("emb", mxopt.RowSparse(np.array([1]), np.ones((1, 3), np.float32)), weight)
    return updater, weight


@pytest.mark.parametrize(
    ("rows", "values", "error", "match"),
    [
        ([0, 4], np.ones((2, 3), np.float32), IndexError,
         r"index 'emb': RowSparse row 4 \(rows\[1\]\) is out of range for a weight of 4 rows"),
        ([-1, 2], np.ones((2, 3), np.float32), IndexError, r"row -1 \(rows\[0\]\)"),
        ([0, 2], np.ones((2, 4), np.float32), ValueError,
         r"index 'emb': RowSparse values of shape \(2, 4\) do not fit weight shape \(4, 3\)"),
        ([0, 2], np.ones((2, 3), np.float64), TypeError,
         "index 'emb': RowSparse values dtype float64 does not match weight dtype float32"),
        ([0, 2], np.array([[1, np.nan, 0], [0, 0, 0]], np.float32), FloatingPointError,
         r"index 'emb': grad holds 1 NaN or infinite value\(s\) out of 6"),
    ],
    ids=["too-big", "negative", "shape", "dtype", "nan"],
)  # fmt: skip
def test_bad_gradients_are_refused_and_nothing_is_modified(rows, values, error, match):
    updater, weight = _updated_once()
    saved = weight.copy()
    arrays = {n: a.copy() for n, a in updater.states["emb"].arrays.items()}
    with pytest.raises(error, match=match):
        updater("emb", mxopt.RowSparse(np.array(rows), values), weight)
    with pytest.raises(error, match=match):  # and as one weight of a list
        updater.update_many(["emb", "other"],
                            [mxopt.RowSparse(np.array(rows), values), np.ones(3, np.float32)],
                            [weight, np.zeros(3, np.float32)])  # fmt: skip
    assert_same_bits(weight, saved)
    assert updater.states["emb"].step == 1 and "other" not in updater.states
    for n, a in arrays.items():
        assert_same_bits(updater.states["emb"].arrays[n], a, n)


def test_skipped_and_zero_dimensional():
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.SparseAdam(state=state), nonfinite="skip")
    weight = np.ones((3, 2), np.float32)
    bad = mxopt.RowSparse(np.array([2]), np.array([[np.inf, 0]], np.float32))
    assert not updater(0, bad, weight)
    assert updater.skipped == 1 and np.all(weight == 1)
    with pytest.raises(ValueError, match="needs a weight with rows"):
        updater(1, mxopt.RowSparse(np.array([0]), np.ones(1, np.float32)), np.ones((), np.float32))
    with pytest.raises(ValueError, match="overlap the memory of weight"):
        updater(0, mxopt.RowSparse(np.array([0]), weight[:1]), weight)


def test_lazy_update_refuses_options_that_need_the_whole_tensor():
    if "cautious" not in mxopt.ADAM.Options.__attrs_attrs__.__dir__():
        pytest.skip("no cautious option")
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.ADAM(lazy_update=True, cautious=True, state=state))
    weight = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="ADAM: lazy updates of RowSparse gradients need"):
        updater(0, mxopt.RowSparse(np.array([1]), np.ones((1, 2), np.float32)), weight)
    assert np.all(weight == 1) and not updater.states


# -- the step engine around it ---------------------------------------------------------


def test_max_grad_norm_reads_the_summed_values():
    """The global norm of a RowSparse gradient is that of its coalesced values: the
    touched rows get the dense path's bits under clipping."""
    rng = np.random.default_rng(5)
    shape = (10, 4)
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    lazy = mxopt.get_updater(mxopt.ADAM(lazy_update=True, state=state), max_grad_norm=0.5)
    dense = mxopt.get_updater(mxopt.ADAM(state=state), max_grad_norm=0.5)
    w_lazy = rng.normal(size=shape).astype(np.float32)
    w_dense, bias_lazy = w_lazy.copy(), np.ones(3, np.float32)
    bias_dense = bias_lazy.copy()
    rows = np.array([7, 2, 7])
    values = rng.normal(size=(3, 4)).astype(np.float32)
    grad = np.zeros(shape, np.float32)
    grad[2] = values[1]
    grad[7] = values[0] + values[2]
    bias_grad = rng.normal(size=3).astype(np.float32)
    lazy.update_many(["w", "b"], [mxopt.RowSparse(rows, values), bias_grad], [w_lazy, bias_lazy])
    dense.update_many(["w", "b"], [grad, bias_grad], [w_dense, bias_dense])
    assert_same_bits(w_lazy[[2, 7]], w_dense[[2, 7]])
    assert_same_bits(bias_lazy, bias_dense)


def test_update_many_lists_mix_sparse_and_dense_gradients():
    rng = np.random.default_rng(11)
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1)
    many = mxopt.get_updater(mxopt.SparseAdam(state=state))
    one = mxopt.get_updater(mxopt.SparseAdam(state=state))
    table, bias_start = rng.normal(size=(9, 2)).astype(np.float32), np.ones(3, np.float32)
    tables, bias = [table, table.copy()], [bias_start, bias_start.copy()]
    for _ in range(3):  # the second and third calls find every state (the list's plan)
        state.begin_batch()
        rows = rng.integers(0, 9, size=4)
        values = rng.normal(size=(4, 2)).astype(np.float32)
        grad = rng.normal(size=3).astype(np.float32)
        many.update_many(["t", "b"], [mxopt.RowSparse(rows, values), grad], [tables[0], bias[0]])
        one("t", mxopt.RowSparse(rows, values), tables[1])
        one("b", grad, bias[1])
    assert_same_bits(tables[0], tables[1])
    assert_same_bits(bias[0], bias[1])


def test_checkpoints_resume_bit_for_bit(tmp_path):
    rng = np.random.default_rng(6)
    batches = sparse_batches(rng, 20, (20, 3), 8)
    start = rng.normal(size=(20, 3)).astype(np.float32)

    def run(updater, state, weight, part):
        for rows, values in part:
            state.begin_batch()
            updater("emb", mxopt.RowSparse(rows, values), weight)

    state = mxopt.OptimizationState(batch_size=2, curr_epoch=1)
    whole = mxopt.get_updater(mxopt.SparseAdam(lr=0.01, state=state))
    w_whole = start.copy()
    run(whole, state, w_whole, batches)

    state = mxopt.OptimizationState(batch_size=2, curr_epoch=1)
    first = mxopt.get_updater(mxopt.SparseAdam(lr=0.01, state=state))
    w = start.copy()
    run(first, state, w, batches[:4])
    first.save(tmp_path / "emb.ckpt")
    resumed = mxopt.load_updater(tmp_path / "emb.ckpt", weights={"emb": w})
    run(resumed, resumed.optimizer.state, w, batches[4:])
    assert_same_bits(w, w_whole)
    for n, a in whole.states["emb"].arrays.items():
        assert_same_bits(resumed.states["emb"].arrays[n], a, n)


def test_lone_update_and_averaging():
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    optimizer = mxopt.SparseAdam(state=state)
    weight = np.ones((5, 2), np.float32)
    wstate = mxopt.create_state(optimizer, 0, weight, averaging=mxopt.EMA(0.5))
    sparse = mxopt.RowSparse(np.array([3]), np.ones((1, 2), np.float32))
    assert mxopt.update(optimizer, 0, weight, sparse, wstate, averaging=mxopt.EMA(0.5))
    assert np.all(weight[3] < 1) and np.all(np.delete(weight, 3, axis=0) == 1)
    average = wstate.arrays["average"]  # moves towards every row of the new weight
    np.testing.assert_array_equal(average, np.where(weight == 1, 1, average))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_threads_give_the_serial_bits(dtype, monkeypatch):
    rng = np.random.default_rng(9)
    shape = (3000, 70)
    rows = rng.integers(0, shape[0], size=2500)
    values = rng.normal(size=(2500, 70)).astype(dtype)
    start = rng.normal(size=shape).astype(dtype)
    results = []
    for cut in (cut_nothing, cut_everything):
        cut(monkeypatch)
        state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
        updater = mxopt.get_updater(mxopt.SparseAdam(state=state))
        weight = start.copy()
        for _ in range(2):
            updater(0, mxopt.RowSparse(rows, values), weight)
        results.append((weight, updater.states[0].arrays["var"]))
    assert_same_bits(results[1][0], results[0][0])
    assert_same_bits(results[1][1], results[0][1])


# -- the GPU path: compile checks, and the emulated GPU (tests/fake_cupy) -------------------


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
def test_row_kernels_compile_with_nvrtc():
    from mxopt.optimizers.adam import ADAM_KERNEL

    source = _cuda.module_source(ADAM_KERNEL)
    assert "mxopt_adam_float_rows" in source and "mxopt_adam_double_rows" in source
    for text in (source, _cuda.SUM_ROWS_SOURCE):
        ok, log = cuda_tools.nvrtc_compile(text, "compute_75")
        assert ok, log
        assert "warning" not in log.lower(), log


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")


@pytest.fixture
def cupy(monkeypatch):
    from tests import fake_cupy

    module = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(_cuda, "_modules", {})
    monkeypatch.setattr(_cuda, "_launch_limits", {})
    return module


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("label", ["SparseAdam", "ADAM-amsgrad-clip", "SGD-momentum", "AdaGrad",
                                   "dense-ADAM"])  # fmt: skip
def test_the_gpu_gives_the_cpu_bits(label, dtype, cupy):
    name, options = LAZY[label] if label in LAZY else ("ADAM", {})
    shape = (300, 37)  # past the fake's launch limit: the grid-stride loops go round
    rng = np.random.default_rng(10)
    batches = sparse_batches(rng, shape[0], shape, 5, dtype=dtype)
    start = rng.normal(size=shape).astype(dtype)
    out = {}
    for xp in (np, cupy):
        state = mxopt.OptimizationState(batch_size=2, curr_epoch=1)
        updater = mxopt.get_updater(make(name, options, state))
        weight = xp.asarray(start.copy())
        for rows, values in batches:
            state.begin_batch()
            rows_int32 = xp.asarray(rows.astype(np.int32))  # converted to int64 inside
            updater(0, mxopt.RowSparse(rows_int32, xp.asarray(values)), weight)
        out[xp is cupy] = (weight, updater.states[0])
    (w_cpu, s_cpu), (w_gpu, s_gpu) = out[False], out[True]
    assert type(w_gpu) is cupy.ndarray and s_gpu.backend == "cupy"
    assert_same_bits(w_gpu.get(), w_cpu)
    for n, a in s_cpu.arrays.items():
        assert_same_bits(s_gpu.arrays[n].get(), a, n)
    launches = {k for k, v in cupy.LAUNCHES.items() if v}
    if label in LAZY:
        assert any(k.endswith("_rows") for k in launches), launches
        assert {"mxopt_sum_rows_float", "mxopt_sum_rows_double"} & launches


@needs_gxx
def test_gpu_errors(cupy):
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.SparseAdam(state=state))
    weight = cupy.ones((4, 2), dtype=cupy.float32)
    with pytest.raises(TypeError, match="rows is a numpy array but values is a cupy array"):
        mxopt.RowSparse(np.array([0]), cupy.ones((1, 2), dtype=cupy.float32))
    sparse = mxopt.RowSparse(np.array([0]), np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match="weight is a cupy array but the RowSparse gradient"):
        updater(0, sparse, weight)
    with cupy.cuda.Device(1):
        elsewhere = mxopt.RowSparse(cupy.asarray(np.array([0])), cupy.ones((1, 2), cupy.float32))
    with pytest.raises(ValueError, match="is on GPU 1 but weight is on GPU 0"):
        updater(0, elsewhere, weight)
    with pytest.raises(IndexError, match="row 9"):
        updater(0, mxopt.RowSparse(cupy.asarray(np.array([9])), cupy.ones((1, 2), cupy.float32)),
                weight)  # fmt: skip
    assert 0 not in updater.states and np.all(weight.get() == 1)
