"""A CPU stand-in for ``cupy.cuda.nccl``: NCCL between the *threads* of one process.

Each rank is a thread. The ranks that made an :class:`NcclCommunicator` from the same
unique id share a :class:`_World` (found by the id), and every collective call goes:
deposit a copy of this rank's send buffer, wait on a barrier for every rank, check that
every rank called the same operation with the same count, type, operator and root, compute
this rank's result from all the deposits, write it, wait again (so no deposit is replaced
before every rank has read it). ``send``/``recv`` go through per-pair mailboxes, executed
at ``groupEnd`` when called inside ``groupStart``/``groupEnd``.

The names, argument order and argument types are those of CuPy's binding
(``cupy/cuda/nccl.pyx``): buffers are device pointers (``array.data.ptr``, plus byte
offsets), counts are element counts, ``datatype`` and ``op`` are the module's constants,
the last argument is the stream pointer. Strict where NCCL would fail or misbehave
silently:

* a pointer must lie, with all ``count`` elements, in one live fake-CuPy allocation on the
  communicator's device (the device current when it was made);
* two ranks of one communicator on the same device are refused (NCCL: "Duplicate GPU");
* ranks that disagree on a collective's arguments all raise (NCCL would hang or scramble);
  a send and its recv must agree on count and type;
* a rank that never comes makes the others raise after :data:`TIMEOUT` seconds, and
  ``abort()`` on one rank makes the others raise at once;
* collectives are refused inside a group (only send/recv are grouped here).

Sums are not in rank order, as NCCL's are not: block ``b`` of a reduce-scatter is summed
ring-wise from rank ``b + 1`` round to rank ``b`` (all-reduce: the same, block by block),
so a test can tell a transport sum from a rank-ordered one.
"""

from __future__ import annotations

import collections
import operator
import os
import threading
import weakref

import numpy as np

from tests import fake_cupy

# ncclDataType_t and ncclRedOp_t, as CuPy exports them
NCCL_INT8 = NCCL_CHAR = 0
NCCL_UINT8 = 1
NCCL_INT32 = NCCL_INT = 2
NCCL_UINT32 = 3
NCCL_INT64 = 4
NCCL_UINT64 = 5
NCCL_FLOAT16 = NCCL_HALF = 6
NCCL_FLOAT32 = NCCL_FLOAT = 7
NCCL_FLOAT64 = NCCL_DOUBLE = 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4

available = True
NCCL_UNIQUE_ID_BYTES = 128
#: Seconds a rank waits for the others before it gives up (raises NcclError).
TIMEOUT = 120.0

_DTYPES = {
    NCCL_INT8: np.int8, NCCL_UINT8: np.uint8, NCCL_INT32: np.int32, NCCL_UINT32: np.uint32,
    NCCL_INT64: np.int64, NCCL_UINT64: np.uint64, NCCL_FLOAT16: np.float16,
    NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64,
}  # fmt: skip
_OPS = {NCCL_SUM: np.add, NCCL_PROD: np.multiply, NCCL_MAX: np.maximum, NCCL_MIN: np.minimum,
        NCCL_AVG: np.add}  # fmt: skip

_ERRORS = {1: "NCCL_ERROR_UNHANDLED_CUDA_ERROR", 2: "NCCL_ERROR_SYSTEM_ERROR",
           3: "NCCL_ERROR_INTERNAL_ERROR", 4: "NCCL_ERROR_INVALID_ARGUMENT",
           5: "NCCL_ERROR_INVALID_USAGE"}  # fmt: skip
_SYSTEM, _INTERNAL, _ARGUMENT, _USAGE = 2, 3, 4, 5


class NcclError(RuntimeError):
    def __init__(self, status: int, detail: str = ""):
        self.status = status
        super().__init__(f"{_ERRORS[status]}: {detail}")


def get_version() -> int:
    return 22105


def get_build_version() -> int:
    return 22105


def get_unique_id() -> tuple:
    """128 C ``char`` values, as CuPy returns them (signed: -128..127); random here."""
    return tuple(b - 256 if b > 127 else b for b in os.urandom(NCCL_UNIQUE_ID_BYTES))


# -- groups (per thread, as NCCL's) -------------------------------------------------------

_group = threading.local()


def _pending() -> list | None:
    """This thread's queued send/recv calls, or None outside a group."""
    return getattr(_group, "ops", None) if getattr(_group, "depth", 0) else None


def groupStart() -> None:  # noqa: N802  (CuPy's names)
    _group.depth = getattr(_group, "depth", 0) + 1
    if _group.depth == 1:
        _group.ops = []


def groupEnd() -> None:  # noqa: N802
    depth = getattr(_group, "depth", 0)
    if depth == 0:
        raise NcclError(_USAGE, "groupEnd called without groupStart")
    _group.depth = depth - 1
    if _group.depth:
        return
    ops, _group.ops = _group.ops, None
    messages = [comm._post(*args) for comm, kind, args in ops if kind == "send"]
    for comm, kind, args in ops:
        if kind == "recv":
            comm._take(*args)
    for message in messages:
        message.delivered(TIMEOUT)


# -- worlds: the ranks sharing one unique id ------------------------------------------------

_worlds: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_worlds_lock = threading.Lock()


class _Message:
    __slots__ = ("data", "datatype", "count", "taken", "error")

    def __init__(self, data, datatype, count):
        self.data, self.datatype, self.count = data, datatype, count
        self.taken = threading.Event()
        self.error = None

    def delivered(self, timeout) -> None:
        if not self.taken.wait(timeout):
            raise NcclError(_SYSTEM, f"a send was not received within {timeout} s")
        if self.error is not None:
            raise NcclError(_ARGUMENT, self.error)


class _World:
    def __init__(self, size: int):
        self.size = size
        self.lock = threading.Lock()
        self.devices: dict[int, int] = {}  # rank -> device
        self.barrier = threading.Barrier(size)
        self.slots: list = [None] * size
        self.mail = collections.defaultdict(collections.deque)  # (source, target) -> queue
        self.mail_ready = threading.Condition()
        self.aborted = False

    def wait(self, what: str) -> None:
        try:
            self.barrier.wait(TIMEOUT)
        except threading.BrokenBarrierError:
            raise NcclError(
                _SYSTEM,
                f"{what}: a rank aborted, or not every rank of {self.size} came within {TIMEOUT} s",
            ) from None


def _index(value, name: str) -> int:
    """A C integer argument: ints (and NumPy ints), not floats, pointers objects or None."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"an integer is required for {name}, got {type(value).__name__}") from None


class NcclCommunicator:
    """``NcclCommunicator(ndev, commId, rank)``: this thread's rank of ``ndev`` ranks
    sharing ``commId``, on the current device; returns once every rank has joined."""

    def __init__(self, ndev, commId, rank):  # noqa: N803
        ndev, rank = _index(ndev, "ndev"), _index(rank, "rank")
        if not isinstance(commId, tuple):
            raise TypeError(f"Argument 'commId' has incorrect type (expected tuple, got "
                            f"{type(commId).__name__})")  # fmt: skip
        assert len(commId) == NCCL_UNIQUE_ID_BYTES
        if not all(-128 <= _index(b, "commId") <= 127 for b in commId):
            raise OverflowError("value too large to convert to char")
        if ndev < 1 or not 0 <= rank < ndev:
            raise NcclError(_ARGUMENT, f"rank {rank} of {ndev} ranks")
        self._device = fake_cupy._current()
        self._rank = rank
        with _worlds_lock:
            world = _worlds.get(commId)
            if world is None:
                world = _worlds[commId] = _World(ndev)
        if world.size != ndev:
            raise NcclError(_ARGUMENT, f"ranks disagree on the size: {world.size} and {ndev}")
        with world.lock:
            if rank in world.devices:
                raise NcclError(_ARGUMENT, f"rank {rank} joined twice")
            world.devices[rank] = self._device
        self._world = world
        world.wait("ncclCommInitRank")
        by_device: dict = {}
        for other, device in sorted(world.devices.items()):
            if device in by_device:  # every rank refuses (NCCL: the others would then hang)
                raise NcclError(
                    _USAGE,
                    f"Duplicate GPU detected : rank {other} and rank {by_device[device]} both "
                    f"on CUDA device {device}",
                )
            by_device[device] = other

    # -- the communicator ----------------------------------------------------------------

    def _alive(self) -> _World:
        world = getattr(self, "_world", None)
        if world is None:
            raise NcclError(_ARGUMENT, "the communicator was destroyed or aborted")
        if world.aborted:
            raise NcclError(_SYSTEM, "another rank aborted the communicator")
        return world

    def destroy(self) -> None:
        self._world = None

    def abort(self) -> None:
        world, self._world = getattr(self, "_world", None), None
        if world is not None:
            world.aborted = True
            world.barrier.abort()
            with world.mail_ready:
                world.mail_ready.notify_all()

    def device_id(self) -> int:
        self._alive()
        return self._device

    def rank_id(self) -> int:
        self._alive()
        return self._rank

    def size(self) -> int:
        return self._alive().size

    # -- memory ----------------------------------------------------------------------------

    def _memory(self, ptr, count, datatype, what: str) -> np.ndarray:
        """The ``count`` elements at device pointer ``ptr``, as a writable host view."""
        ptr, count, datatype = _index(ptr, "buffer"), _index(count, "count"), _index(
            datatype, "datatype")  # fmt: skip
        if count < 0:
            raise OverflowError("can't convert negative value to size_t")
        if datatype not in _DTYPES:
            raise NcclError(_ARGUMENT, f"{what}: invalid datatype {datatype}")
        dtype = np.dtype(_DTYPES[datatype])
        if count == 0:
            return np.zeros(0, dtype)
        if ptr % dtype.itemsize:
            raise NcclError(_ARGUMENT, f"{what}: pointer {ptr:#x} misaligned for {dtype}")
        try:
            memory, device = fake_cupy._device_memory(ptr, count * dtype.itemsize)
        except ValueError as error:
            raise NcclError(_ARGUMENT, f"{what}: {error}") from None
        if device != self._device:
            raise NcclError(
                _ARGUMENT,
                f"{what}: the buffer is on device {device}, the communicator on device "
                f"{self._device}",
            )
        return memory.view(dtype)

    # -- collectives ----------------------------------------------------------------------

    def _collective(self, what, signature, sent, compute, stream):
        """Deposit ``sent`` (a host copy, or None), wait for every rank, check that all
        called ``what`` with the same ``signature``, return ``compute(deposits)``."""
        _index(stream, "stream")
        world = self._alive()
        if _pending() is not None:
            raise NcclError(_USAGE, f"{what}: the fake groups send/recv only")
        world.slots[self._rank] = (what, signature, sent)
        world.wait(what)
        calls = list(world.slots)
        try:
            for rank, (name, other, _) in enumerate(calls):
                if (name, other) != (what, signature):
                    raise NcclError(
                        _USAGE,
                        f"rank {self._rank} called {what}{signature} but rank {rank} "
                        f"called {name}{other}",
                    )
            return compute([deposit for _, _, deposit in calls])
        finally:
            world.wait(what)

    def _ring_sum(self, blocks, op):
        """``blocks[r]`` (rank r's contribution to one block ``b``) reduced from rank
        ``b + 1`` round the ring; ``op``'s NumPy function in the data's type."""

        def reduce(b):
            order = [(b + 1 + k) % len(blocks) for k in range(len(blocks))]
            acc = blocks[order[0]].copy()
            for r in order[1:]:
                _OPS[op](acc, blocks[r], out=acc)
            if op == NCCL_AVG:
                acc /= acc.dtype.type(len(blocks))
            return acc

        return reduce

    def _op(self, op, what):
        op = _index(op, "op")
        if op not in _OPS:
            raise NcclError(_ARGUMENT, f"{what}: invalid reduction {op}")
        return op

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        op = self._op(op, "allReduce")
        send = self._memory(sendbuf, count, datatype, "allReduce sendbuf")
        recv = self._memory(recvbuf, count, datatype, "allReduce recvbuf")
        size = self._alive().size

        def compute(deposits):
            bounds = np.linspace(0, len(send), size + 1).astype(np.int64)
            parts = []
            for b in range(size):
                blocks = [d[bounds[b] : bounds[b + 1]] for d in deposits]
                parts.append(self._ring_sum(blocks, op)(b))
            return np.concatenate(parts)

        recv[...] = self._collective("allReduce", (count, datatype, op), send.copy(),
                                     compute, stream)  # fmt: skip

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):  # noqa: N802
        op = self._op(op, "reduceScatter")
        size = self._alive().size
        send = self._memory(sendbuf, _index(recvcount, "count") * size, datatype,
                            "reduceScatter sendbuf")  # fmt: skip
        recv = self._memory(recvbuf, recvcount, datatype, "reduceScatter recvbuf")
        n, me = len(recv), self._rank

        def compute(deposits):
            return self._ring_sum([d[me * n : (me + 1) * n] for d in deposits], op)(me)

        recv[...] = self._collective("reduceScatter", (recvcount, datatype, op), send.copy(),
                                     compute, stream)  # fmt: skip

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):  # noqa: N802
        size = self._alive().size
        send = self._memory(sendbuf, count, datatype, "allGather sendbuf")
        recv = self._memory(recvbuf, _index(count, "count") * size, datatype,
                            "allGather recvbuf")  # fmt: skip
        recv[...] = self._collective("allGather", (count, datatype), send.copy(),
                                     np.concatenate, stream)  # fmt: skip

    def _rooted(self, what, root, signature, sent, stream):
        root = _index(root, "root")
        if not 0 <= root < self._alive().size:
            raise NcclError(_ARGUMENT, f"{what}: invalid root {root}")
        return self._collective(what, (*signature, root), sent if self._rank == root else None,
                                lambda deposits: deposits[root], stream)  # fmt: skip

    def bcast(self, buff, count, datatype, root, stream):
        memory = self._memory(buff, count, datatype, "bcast buff")
        memory[...] = self._rooted("bcast", root, (count, datatype), memory.copy(), stream)

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        send = self._memory(sendbuff, count, datatype, "broadcast sendbuff")
        recv = self._memory(recvbuff, count, datatype, "broadcast recvbuff")
        recv[...] = self._rooted("broadcast", root, (count, datatype), send.copy(), stream)

    def reduce(self, sendbuf, recvbuf, count, datatype, op, root, stream):
        op, root = self._op(op, "reduce"), _index(root, "root")
        send = self._memory(sendbuf, count, datatype, "reduce sendbuf")
        reduce = self._ring_sum  # the ring ends at the root
        result = self._collective("reduce", (count, datatype, op, root), send.copy(),
                                  lambda deposits: reduce(deposits, op)(root), stream)  # fmt: skip
        if self._rank == root:
            self._memory(recvbuf, count, datatype, "reduce recvbuf")[...] = result

    # -- point to point ------------------------------------------------------------------

    def _peer(self, peer, what) -> int:
        peer = _index(peer, "peer")
        if not 0 <= peer < self._alive().size:
            raise NcclError(_ARGUMENT, f"{what}: invalid peer {peer}")
        return peer

    def send(self, sendbuf, count, datatype, peer, stream):
        _index(stream, "stream")
        args = (sendbuf, count, datatype, self._peer(peer, "send"))
        self._memory(sendbuf, count, datatype, "send sendbuf")  # checked now, read when run
        ops = _pending()
        if ops is not None:
            ops.append((self, "send", args))
        else:
            self._post(*args).delivered(TIMEOUT)

    def recv(self, recvbuf, count, datatype, peer, stream):
        _index(stream, "stream")
        args = (recvbuf, count, datatype, self._peer(peer, "recv"))
        self._memory(recvbuf, count, datatype, "recv recvbuf")
        ops = _pending()
        if ops is not None:
            ops.append((self, "recv", args))
        else:
            self._take(*args)

    def _post(self, sendbuf, count, datatype, peer) -> _Message:
        world = self._alive()
        message = _Message(self._memory(sendbuf, count, datatype, "send").copy(), datatype,
                           count)  # fmt: skip
        with world.mail_ready:
            world.mail[(self._rank, peer)].append(message)
            world.mail_ready.notify_all()
        return message

    def _take(self, recvbuf, count, datatype, peer) -> None:
        world = self._alive()
        queue = world.mail[(peer, self._rank)]
        with world.mail_ready:
            if not world.mail_ready.wait_for(lambda: queue or world.aborted, TIMEOUT):
                raise NcclError(_SYSTEM, f"recv: nothing from rank {peer} within {TIMEOUT} s")
            if world.aborted:
                raise NcclError(_SYSTEM, "recv: another rank aborted the communicator")
            message = queue.popleft()
        if (message.count, message.datatype) != (count, datatype):
            message.error = (f"rank {peer} sent {message.count} elements of type "
                             f"{message.datatype}, rank {self._rank} expected {count} of type "
                             f"{datatype}")  # fmt: skip
            message.taken.set()
            raise NcclError(_ARGUMENT, message.error)
        self._memory(recvbuf, count, datatype, "recv")[...] = message.data
        message.taken.set()
