"""Which :class:`~mxopt.distributed.collectives.Collectives` a job uses: MPI for NumPy
arrays, NCCL for CuPy arrays, nothing for a world of one."""

from __future__ import annotations

from mxopt.distributed.collectives import Collectives, LocalCollectives, MpiCollectives

__all__ = ["collectives_for"]


def collectives_for(comm, backend: str) -> Collectives:
    """The collectives for ``comm`` (an mpi4py communicator, or ``None`` for
    ``MPI.COMM_WORLD`` when mpi4py is installed, else a world of one) and arrays of
    ``backend`` (``"numpy"``: MPI; ``"cupy"``: NCCL)."""
    if comm is None:
        try:
            from mpi4py import MPI
        except (ImportError, RuntimeError):  # RuntimeError: mpi4py without an MPI library
            return LocalCollectives()
        comm = MPI.COMM_WORLD
    if isinstance(comm, Collectives):
        return comm
    if backend == "cupy":
        from mxopt.distributed.nccl import NcclCollectives

        return NcclCollectives(comm)
    if comm.Get_size() == 1:
        return LocalCollectives()
    return MpiCollectives(comm)
