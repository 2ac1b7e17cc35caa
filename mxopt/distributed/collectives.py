"""The few collective operations a sharded step needs, on MPI (NumPy) or NCCL (CuPy).

A :class:`Collectives` moves data between the ranks of one job; mxopt writes none of the
transport itself. :class:`MpiCollectives` runs on `mpi4py <https://mpi4py.readthedocs.io>`_
(any MPI: MPICH from ``pip install mpich``, Open MPI, a cluster's own) with NumPy arrays
(the pip MPI wheels are not CUDA-aware: they are never handed device memory).
:class:`~mxopt.distributed.nccl.NcclCollectives` runs on NCCL through CuPy, with MPI
only to start the job and to hand NCCL its unique id. :class:`LocalCollectives` is the
world of one process.

Every operation is called by every rank in the same order. Offsets are the element
boundaries of the ranks' shares of a flat array: rank ``r`` owns
``[offsets[r], offsets[r + 1])``.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["Collectives", "LocalCollectives", "MpiCollectives", "together"]


class Collectives(abc.ABC):
    """Collective operations over the ranks of a job (``rank`` of ``size``)."""

    rank: int
    size: int

    @abc.abstractmethod
    def reduce_scatter(self, full, share, offsets, ordered: bool) -> None:
        """``share[...] =`` the sum over ranks of their ``full[offsets[rank]:offsets[rank+1]]``.

        ``ordered``: summed in rank order, ``((g_0 + g_1) + g_2) + ...``, so the bits are
        those of one process adding the ranks' gradients in that order; otherwise in the
        transport's own order (faster, and the same on every rank, but not necessarily
        the rank order)."""

    @abc.abstractmethod
    def all_gather(self, full, offsets) -> None:
        """Every rank's share of ``full`` copied into ``full`` on every rank (in place)."""

    @abc.abstractmethod
    def broadcast(self, array, root: int = 0) -> None:
        """``array`` on every rank becomes ``root``'s (in place)."""

    @abc.abstractmethod
    def all_gather_values(self, values: np.ndarray, counts) -> np.ndarray:
        """Small host float64 arrays, ``counts[r]`` values from rank ``r``, concatenated
        in rank order on every rank (statistics, decisions, agreement on errors)."""


class LocalCollectives(Collectives):
    """The world of one process: every operation is a copy or nothing."""

    rank, size = 0, 1

    def reduce_scatter(self, full, share, offsets, ordered: bool) -> None:
        if share is not full:
            share[...] = full[int(offsets[0]) : int(offsets[1])]

    def all_gather(self, full, offsets) -> None:
        pass

    def broadcast(self, array, root: int = 0) -> None:
        pass

    def all_gather_values(self, values: np.ndarray, counts) -> np.ndarray:
        return np.array(values, dtype=np.float64, copy=True)


class MpiCollectives(Collectives):
    """:class:`Collectives` over an mpi4py communicator, for NumPy arrays."""

    def __init__(self, comm):
        from mpi4py import MPI  # noqa: F401  (mpi4py is an extra: pip install "mxopt[mpi]")

        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def _counts(self, offsets):
        offsets = np.asarray(offsets, dtype=np.int64)
        return np.diff(offsets).tolist(), offsets[:-1].tolist()

    def reduce_scatter(self, full, share, offsets, ordered: bool) -> None:
        from mpi4py import MPI

        counts, starts = self._counts(offsets)
        if not ordered:
            self.comm.Reduce_scatter([full, _mpi_type(full)], [share, _mpi_type(share)], counts,
                                     op=MPI.SUM)  # fmt: skip
            return
        # Every rank receives each rank's copy of its own share, then adds them in rank order.
        mine = counts[self.rank]
        pieces = np.empty(mine * self.size, dtype=full.dtype)
        self.comm.Alltoallv(
            [full, counts, starts, _mpi_type(full)],
            [pieces, [mine] * self.size, [mine * r for r in range(self.size)], _mpi_type(full)],
        )
        np.copyto(share, pieces[:mine])
        for r in range(1, self.size):
            share += pieces[r * mine : (r + 1) * mine]

    def all_gather(self, full, offsets) -> None:
        from mpi4py import MPI

        counts, starts = self._counts(offsets)
        self.comm.Allgatherv(MPI.IN_PLACE, [full, counts, starts, _mpi_type(full)])

    def broadcast(self, array, root: int = 0) -> None:
        self.comm.Bcast(array, root=root)

    def all_gather_values(self, values: np.ndarray, counts) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.float64)
        counts = [int(c) for c in counts]
        out = np.empty(sum(counts), dtype=np.float64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        self.comm.Allgatherv(values, [out, counts, starts, _mpi_type(out)])
        return out


def together(collectives: Collectives, work, refusal, cleanup=None):
    """``work()`` on every rank, agreed on: if it raised on any rank, every rank raises (after
    ``cleanup``): its own error where it raised, ``refusal(failed_ranks)`` elsewhere; so no
    rank goes on alone or waits for one that stopped. Returns ``work()``'s result."""
    failure = result = None
    try:
        result = work()
    except Exception as error:
        failure = error
    flags = collectives.all_gather_values(
        np.array([1.0 if failure is not None else 0.0]), [1] * collectives.size
    )
    if flags.any():
        if cleanup is not None:
            cleanup()
        if failure is not None:
            raise failure
        raise refusal(np.flatnonzero(flags).tolist())
    return result


def _mpi_type(array):
    from mpi4py import MPI

    return MPI.DOUBLE if array.dtype == np.float64 else MPI.FLOAT
