"""Data-parallel training across processes and machines, with the optimizer state sharded
(ZeRO stage 1): :class:`ShardedUpdater` on MPI (NumPy arrays, through mpi4py) or NCCL (CuPy
arrays, through ``cupy.cuda.nccl``). See the guide, ``docs/distributed.md``.

::

    from mpi4py import MPI
    from mxopt.distributed import ShardedUpdater

    updater = ShardedUpdater(optimizer, buffer, comm=MPI.COMM_WORLD)
    updater.broadcast_weights()
    for batch in my_shard_of_the_data:
        ...  # write this rank's summed gradients into buffer.grads
        optimizer.state.begin_batch()
        updater.step()
"""

from mxopt.distributed.collectives import Collectives, LocalCollectives, MpiCollectives
from mxopt.distributed.files import consolidate, read_sharded
from mxopt.distributed.nccl import NcclCollectives
from mxopt.distributed.sharded import REDUCTIONS, ShardedUpdater, shares
from mxopt.distributed.transport import collectives_for

__all__ = [
    "REDUCTIONS",
    "Collectives",
    "LocalCollectives",
    "MpiCollectives",
    "NcclCollectives",
    "ShardedUpdater",
    "collectives_for",
    "consolidate",
    "read_sharded",
    "shares",
]
