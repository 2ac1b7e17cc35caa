"""NcclCollectives: sharded steps over NCCL, run on the CPU.

The fake CuPy (tests/fake_cupy) runs mxopt's CUDA kernels on the CPU, and its
``cupy.cuda.nccl`` (tests/fake_cupy/cuda_nccl.py) runs NCCL's collectives between the
threads of this process: each rank is a thread with its own fake device, and the ranks
meet through the unique id, as NCCL's processes do. Without MPI between threads, each
rank's :class:`NcclCollectives` is made with ``from_unique_id``.

Checked: the rank-ordered reduce-scatter has the bits of the rank-ordered sum (the fake's
transport sum does not); every rank of a :class:`ShardedUpdater` ends each step with the
weights of one NumPy process updating the whole buffer from the rank-ordered sum, bit for
bit; uneven and empty shares; all-gather, broadcast and all_gather_values; the errors.
The last test runs a world of one over real NCCL, where CuPy and a GPU are present.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

import mxopt
from mxopt.distributed import ShardedUpdater
from mxopt.distributed.nccl import NcclCollectives
from mxopt.kernels import cuda as _cuda
from tests import fake_cupy
from tests.conftest import CUPY
from tests.fake_cupy import cuda_nccl

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
SIZES = [1, 2, 3]
#: Offsets of the ranks' shares of 40 elements: uneven with an empty share, and even.
OFFSETS = {
    1: [[0, 40]],
    2: [[0, 29, 40], [0, 0, 40], [0, 20, 40]],
    3: [[0, 0, 17, 40], [0, 17, 17, 40], [0, 25, 40, 40], [0, 12, 24, 36]],
}


@pytest.fixture
def cupy(monkeypatch):
    """The fake ``cupy`` with four devices (a device per rank, as NCCL wants); mxopt's
    per-device module memo starts empty and is restored afterwards."""
    module = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(fake_cupy, "DEVICE_COUNT", 4)
    monkeypatch.setattr(cuda_nccl, "TIMEOUT", 60.0)
    monkeypatch.setattr(_cuda, "_modules", {})
    monkeypatch.setattr(_cuda, "_launch_limits", {})
    return module


def bits(array) -> np.ndarray:
    host = array.get() if isinstance(array, fake_cupy.ndarray) else np.asarray(array)
    host = np.ascontiguousarray(host)
    return host.view(BITS[host.dtype])


def run_ranks(cupy, size: int, body) -> list:
    """``body(rank, collectives)`` on ``size`` threads, rank ``r`` on device ``r``; their
    results in rank order. A rank that raises aborts the communicator (so the others stop
    at once instead of waiting out the timeout); the first error is raised here."""
    unique_id = cupy.cuda.nccl.get_unique_id()
    results, errors = [None] * size, [None] * size

    def rank_main(rank):
        collectives = None
        try:
            cupy.cuda.Device(rank).use()
            collectives = NcclCollectives.from_unique_id(size, unique_id, rank)
            results[rank] = body(rank, collectives)
        except BaseException as error:
            errors[rank] = error
            if collectives is not None:
                collectives.nccl_comm.abort()

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
        assert not thread.is_alive(), "a rank hung"
    # the root cause first: the others' NCCL system errors only say that a rank aborted
    for error in sorted((e for e in errors if e is not None),
                        key=lambda e: getattr(e, "status", None) == 2):  # fmt: skip
        raise error
    return results


def gradients(size: int, n: int, dtype, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=n) * 3).astype(dtype) for _ in range(size)]


def rank_ordered_sum(arrays):
    total = arrays[0].copy()
    for a in arrays[1:]:
        total += a  # ((g_0 + g_1) + g_2) + ..., as one process adds them
    return total


# ---------------------------------------------------------------------------------------
# (1) the collectives


def _cases():
    return [(size, offsets) for size in SIZES for offsets in OFFSETS[size]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("size", "offsets"), _cases(), ids=str)
def test_ordered_reduce_scatter_is_the_rank_ordered_sum(cupy, size, offsets, dtype):
    grads = gradients(size, 40, dtype, seed=size)
    expected = rank_ordered_sum(grads)

    def body(rank, collectives):
        full = cupy.asarray(grads[rank])
        lo, hi = offsets[rank], offsets[rank + 1]
        share = cupy.full(hi - lo, np.nan, dtype=dtype)
        collectives.reduce_scatter(full, share, offsets, ordered=True)
        np.testing.assert_array_equal(full.get(), grads[rank])  # the input is left alone
        return share.get()

    shares = run_ranks(cupy, size, body)
    for rank, share in enumerate(shares):
        np.testing.assert_array_equal(
            bits(share), bits(expected[offsets[rank] : offsets[rank + 1]]), f"rank {rank}"
        )


@pytest.mark.parametrize(("size", "offsets"), _cases(), ids=str)
def test_transport_reduce_scatter_sums_in_its_own_order(cupy, size, offsets):
    grads = gradients(size, 40, np.float32, seed=10 + size)
    transport = run_ranks(cupy, size, lambda rank, collectives: _scatter(
        cupy, collectives, grads[rank], offsets, rank, ordered=False))  # fmt: skip
    summed = np.concatenate(transport)
    np.testing.assert_allclose(summed, rank_ordered_sum(grads)[: offsets[-1]], atol=1e-5)
    if size == 3:  # the fake sums ring-wise, as NCCL does: other bits than the rank order
        ordered = rank_ordered_sum(grads)[: offsets[-1]]
        assert (bits(summed) != bits(ordered)).any()


def _scatter(cupy, collectives, grad, offsets, rank, ordered):
    share = cupy.zeros(offsets[rank + 1] - offsets[rank], dtype=grad.dtype)
    collectives.reduce_scatter(cupy.asarray(grad), share, offsets, ordered=ordered)
    return share.get()


@pytest.mark.parametrize(("size", "offsets"), _cases(), ids=str)
def test_all_gather_fills_every_rank_with_every_share(cupy, size, offsets):
    values = [np.arange(40, dtype=np.float64) + 1000 * r for r in range(size)]
    expected = np.concatenate([values[r][offsets[r] : offsets[r + 1]] for r in range(size)])

    def body(rank, collectives):
        full = cupy.full(40, np.nan)
        full[offsets[rank] : offsets[rank + 1]] = cupy.asarray(
            values[rank][offsets[rank] : offsets[rank + 1]]
        )
        collectives.all_gather(full, offsets)
        return full.get()

    for rank, full in enumerate(run_ranks(cupy, size, body)):
        np.testing.assert_array_equal(full[: offsets[-1]], expected, f"rank {rank}")
        assert np.isnan(full[offsets[-1] :]).all()  # past the last share: untouched


@pytest.mark.parametrize("size", SIZES)
def test_broadcast_copies_the_roots_array(cupy, size):
    root = size - 1

    def body(rank, collectives):
        array = cupy.full(13, float(rank), dtype=np.float32)
        collectives.broadcast(array, root)
        return array.get()

    for array in run_ranks(cupy, size, body):
        np.testing.assert_array_equal(array, np.full(13, root, np.float32))


@pytest.mark.parametrize(("size", "counts"), [(1, [3]), (1, [0]), (2, [2, 5]), (3, [2, 0, 3]),
                                              (3, [0, 0, 0]), (3, [1, 1, 1])], ids=str)  # fmt: skip
def test_all_gather_values_concatenates_in_rank_order(cupy, size, counts):
    mine = [np.arange(c, dtype=np.float64) * 0.1 + r for r, c in enumerate(counts)]
    mine[-1][:1] = np.nan  # any float64 travels, NaN included
    gathered = run_ranks(cupy, size, lambda rank, collectives: collectives.all_gather_values(
        mine[rank], counts))  # fmt: skip
    for result in gathered:
        assert result.dtype == np.float64
        np.testing.assert_array_equal(result, np.concatenate(mine))


def test_scratch_buffers_are_kept_and_grow(cupy):
    def body(rank, collectives):
        for n in (10, 40, 30):
            offsets = [0, n // 3, n]
            collectives.reduce_scatter(cupy.ones(n, dtype=np.float32),
                                       cupy.zeros(offsets[rank + 1] - offsets[rank],
                                                  dtype=np.float32), offsets, False)  # fmt: skip
            scratch = collectives._scratch[np.dtype(np.float32)][0]
        return scratch.size

    assert run_ranks(cupy, 2, body) == [2 * 27, 2 * 27]  # the largest share of 40, twice


# ---------------------------------------------------------------------------------------
# (2) sharded steps: the bits of one process

MODEL = {"w1": (7, 13), "b1": (13,), "empty": (0,), "big": (150,), "one": (1,), "t": (3, 4, 5)}
#: Two tensors for three ranks: rank 0's share is empty.
SMALL = {"a": (50,), "b": (3,)}
OPTIMIZERS = {
    "ADAM": lambda state: mxopt.ADAM(lr=0.01, state=state),
    "LAMB": lambda state: mxopt.LAMB(lr=0.01, state=state),
    "SGD": lambda state: mxopt.SGD(lr=0.1, momentum=0.9, nesterov=True, state=state),
}
STEPS = 4


def sharded_training(cupy, size, name, model, *, reduce="ordered", nan_step=None, **options):
    """STEPS sharded steps on ``size`` thread-ranks, and the same steps of one NumPy
    process given the rank-ordered sums. Returns ``(per rank: [(applied, weight bits)]
    per step, reference: [(applied, weight bits)] per step)``."""
    total = sum(int(np.prod(s)) for s in model.values())
    start = np.random.default_rng(0).normal(size=total).astype(np.float32)
    grads = [gradients(size, total, np.float32, seed=100 + step) for step in range(STEPS)]
    if nan_step is not None:
        grads[nan_step][size - 1][-1] = np.nan

    state = mxopt.OptimizationState(batch_size=4 * size)
    reference = mxopt.get_updater(OPTIMIZERS[name](state), **options)
    buffer = mxopt.ParameterBuffer(model, np.float32, weight=start.copy())
    expected = []
    for step in range(STEPS):
        state.begin_batch()
        buffer.grad[...] = rank_ordered_sum(grads[step])
        applied = reference.update_buffer(buffer)
        expected.append((applied, bits(buffer.weight).copy()))

    def body(rank, collectives):
        state = mxopt.OptimizationState(batch_size=4 * size)
        weight = cupy.asarray(start) if rank == 0 else cupy.zeros(total, dtype=np.float32)
        buffer = mxopt.ParameterBuffer(model, np.float32, weight=weight,
                                       grad=cupy.zeros(total, dtype=np.float32))  # fmt: skip
        updater = ShardedUpdater(OPTIMIZERS[name](state), buffer, comm=collectives,
                                 reduce=reduce, **options)  # fmt: skip
        assert (updater.rank, updater.size) == (rank, size)
        updater.broadcast_weights()  # every rank starts from rank 0's weights
        history = []
        for step in range(STEPS):
            state.begin_batch()
            buffer.grad[...] = cupy.asarray(grads[step][rank])
            applied = updater.step()
            history.append((applied, bits(buffer.weight).copy()))
        return history

    return run_ranks(cupy, size, body), expected


def assert_every_rank_has(histories, expected):
    for rank, history in enumerate(histories):
        for step, ((applied, weight), (applied_1, weight_1)) in enumerate(
            zip(history, expected, strict=True)
        ):
            assert applied == applied_1, (rank, step)
            np.testing.assert_array_equal(weight, weight_1, f"rank {rank}, step {step}")


@needs_gxx
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharded_steps_have_the_bits_of_one_process(cupy, name, size):
    assert_every_rank_has(*sharded_training(cupy, size, name, MODEL))


@needs_gxx
@pytest.mark.parametrize("name", ["ADAM", "LAMB"])
def test_an_empty_share_has_the_bits_of_one_process(cupy, name):
    assert_every_rank_has(*sharded_training(cupy, 3, name, SMALL))


@needs_gxx
def test_global_clipping_and_a_skipped_step_agree_with_one_process(cupy):
    histories, expected = sharded_training(cupy, 3, "ADAM", MODEL, nan_step=2,
                                           nonfinite="skip", max_grad_norm=5.0)  # fmt: skip
    assert [applied for applied, _ in expected] == [True, True, False, True]
    assert_every_rank_has(histories, expected)


@needs_gxx
def test_transport_sums_give_every_rank_the_same_weights(cupy):
    histories, expected = sharded_training(cupy, 3, "SGD", MODEL, reduce="sum")
    for history in histories[1:]:
        for (_, weight), (_, weight_0) in zip(history, histories[0], strict=True):
            np.testing.assert_array_equal(weight, weight_0)
    final = histories[0][-1][1].view(np.float32)
    np.testing.assert_allclose(final, expected[-1][1].view(np.float32), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# (3) errors, and the fake's own strictness


def test_non_cupy_arrays_and_other_devices_are_refused(cupy):
    collectives = NcclCollectives.from_unique_id(1, cupy.cuda.nccl.get_unique_id(), 0)
    assert (collectives.rank, collectives.size, collectives.device) == (0, 1, 0)
    with pytest.raises(TypeError, match="must be a cupy.ndarray.*MpiCollectives"):
        collectives.all_gather(np.zeros(4, np.float32), [0, 4])
    with pytest.raises(TypeError, match="must be a cupy.ndarray"):
        collectives.reduce_scatter(cupy.zeros(4, dtype=np.float32), np.zeros(4, np.float32),
                                   [0, 4], True)  # fmt: skip
    with pytest.raises(TypeError, match="float32 or float64"):
        collectives.broadcast(cupy.zeros(4, dtype=np.int32))
    with cupy.cuda.Device(1):
        elsewhere = cupy.zeros(4, dtype=np.float32)
    with pytest.raises(ValueError, match="on device 1.*on device 0"):
        collectives.broadcast(elsewhere)
    with pytest.raises(ValueError, match="offsets"):
        collectives.all_gather(cupy.zeros(4, dtype=np.float32), [0, 5])
    with pytest.raises(ValueError, match="counts says 2"):
        collectives.all_gather_values(np.zeros(3), [2])
    with pytest.raises(ValueError, match="rank must be"):
        NcclCollectives.from_unique_id(2, cupy.cuda.nccl.get_unique_id(), 2)
    collectives.close()
    with pytest.raises(RuntimeError, match="closed"):
        collectives.broadcast(cupy.zeros(4, dtype=np.float32))


def test_the_mpi_constructor_broadcasts_rank_0s_unique_id(cupy):
    class OneRank:  # what NcclCollectives asks of an mpi4py communicator
        def Get_rank(self):  # noqa: N802
            return 0

        def Get_size(self):  # noqa: N802
            return 1

        def bcast(self, value, root):
            assert root == 0
            unique_id, failure = value
            assert failure is None and len(unique_id) == 128
            return value

    collectives = NcclCollectives(OneRank())
    assert collectives.comm is not None and collectives.size == 1
    assert collectives.all_gather_values(np.array([1.5, 2.5]), [2]).tolist() == [1.5, 2.5]


def test_fake_unique_ids_are_fresh_tuples_of_128_chars(cupy):
    first, second = cupy.cuda.nccl.get_unique_id(), cupy.cuda.nccl.get_unique_id()
    assert isinstance(first, tuple) and len(first) == 128 and first != second
    assert all(isinstance(b, int) and -128 <= b <= 127 for b in first)
    with pytest.raises(TypeError, match="tuple"):
        cupy.cuda.nccl.NcclCommunicator(1, bytes(128), 0)


def test_fake_nccl_refuses_two_ranks_on_one_device(cupy):
    unique_id = cupy.cuda.nccl.get_unique_id()
    errors = []

    def join(rank):
        try:
            cupy.cuda.nccl.NcclCommunicator(2, unique_id, rank)  # both on device 0
        except cuda_nccl.NcclError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=join, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(errors) == 2 and all("Duplicate GPU" in e for e in errors)


def test_fake_nccl_refuses_bad_pointers_and_disagreeing_ranks(cupy):
    nccl = cupy.cuda.nccl
    comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
    a = cupy.zeros(4, dtype=np.float32)
    stream = cupy.cuda.get_current_stream().ptr
    with pytest.raises(nccl.NcclError, match="no live device allocation"):
        comm.allGather(a.data.ptr, a.data.ptr, 5, nccl.NCCL_FLOAT32, stream)  # past the end
    with pytest.raises(TypeError):
        comm.allGather(a.data, a.data, 4, nccl.NCCL_FLOAT32, stream)  # not a pointer
    with cupy.cuda.Device(1):
        b = cupy.zeros(4, dtype=np.float32)
    with pytest.raises(nccl.NcclError, match="device 1"):
        comm.bcast(b.data.ptr, 4, nccl.NCCL_FLOAT32, 0, stream)
    freed = cupy.zeros(4, dtype=np.float32).data.ptr
    with pytest.raises(nccl.NcclError, match="no live device allocation"):
        comm.bcast(freed, 4, nccl.NCCL_FLOAT32, 0, stream)
    comm.destroy()
    with pytest.raises(nccl.NcclError, match="destroyed"):
        comm.bcast(a.data.ptr, 4, nccl.NCCL_FLOAT32, 0, stream)

    def body(rank, collectives):
        x = cupy.zeros(4, dtype=np.float32)
        collectives.nccl_comm.bcast(x.data.ptr, 4 - rank, nccl.NCCL_FLOAT32, 0, stream)

    with pytest.raises(nccl.NcclError, match="rank 0 called bcast"):
        run_ranks(cupy, 2, body)


# ---------------------------------------------------------------------------------------
# (4) real NCCL, a world of one (needs CuPy, NCCL and a GPU)


@pytest.mark.gpu
@pytest.mark.skipif(CUPY is None, reason="needs CuPy and a CUDA device")
def test_a_world_of_one_over_real_nccl_has_the_bits_of_update_buffer():
    from cupy.cuda import nccl

    if not getattr(nccl, "available", False):
        pytest.skip("this CuPy has no NCCL")
    cp = CUPY
    collectives = NcclCollectives.from_unique_id(1, nccl.get_unique_id(), 0)
    total = sum(int(np.prod(s)) for s in MODEL.values())
    rng = np.random.default_rng(3)
    start = rng.normal(size=total).astype(np.float32)

    grad = cp.asarray(rng.normal(size=total).astype(np.float32))
    share = cp.zeros(total, dtype=cp.float32)
    for ordered in (True, False):
        collectives.reduce_scatter(grad, share, [0, total], ordered)
        np.testing.assert_array_equal(share.get(), grad.get())
    assert collectives.all_gather_values(np.array([1.0, 2.0]), [2]).tolist() == [1.0, 2.0]

    state, state_1 = mxopt.OptimizationState(batch_size=4), mxopt.OptimizationState(4)
    buffer = mxopt.ParameterBuffer(MODEL, np.float32, weight=cp.asarray(start))
    reference = mxopt.ParameterBuffer(MODEL, np.float32, weight=cp.asarray(start))
    sharded = ShardedUpdater(mxopt.ADAM(lr=0.01, state=state), buffer, comm=collectives,
                             max_grad_norm=5.0)  # fmt: skip
    single = mxopt.get_updater(mxopt.ADAM(lr=0.01, state=state_1), max_grad_norm=5.0)
    sharded.broadcast_weights()
    for step in range(STEPS):
        g = cp.asarray(rng.normal(size=total).astype(np.float32))
        state.begin_batch()
        state_1.begin_batch()
        buffer.grad[...] = g
        reference.grad[...] = g
        assert sharded.step() == single.update_buffer(reference)
        np.testing.assert_array_equal(bits(buffer.weight.get()), bits(reference.weight.get()),
                                      f"step {step}")  # fmt: skip
    full = cp.zeros(total, dtype=cp.float32)
    full[...] = buffer.weight
    collectives.all_gather(full, [0, total])
    np.testing.assert_array_equal(full.get(), buffer.weight.get())
    collectives.close()
