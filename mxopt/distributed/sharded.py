"""Data-parallel steps with the optimizer state sharded across ranks (ZeRO stage 1).

Every rank holds the whole model in one :class:`~mxopt.ParameterBuffer` and writes the
gradient of its part of the batch (summed over its examples) into ``buffer.grads``. A step:

1. **reduce-scatter**: each rank receives the sum over all ranks of the gradients of its
   *share*, a run of whole tensors balanced by size (:func:`shares`);
2. **statistics**: each rank computes the per-index sums of squares and non-finite counts
   of its share; one small all-gather gives every rank all of them, in index order, with
   a flag saying whether the rank failed so far, so every rank makes the same decision
   (raise, skip, clip, loss scale) from the same global numbers, and a rank's error stops
   every rank before any weight is written;
3. **update**: each rank updates its share with an ordinary :class:`~mxopt.Updater`
   (:meth:`~mxopt.Updater.update_buffer` on a buffer that views the share of the model),
   which keeps the optimizer state of the share only: 1/N of the state per rank;
4. **all-gather** of the updated weights, so every rank ends the step with the same model.

With ``reduce="ordered"`` the gradients are summed in rank order and the whole step has
the bits of one process updating the whole buffer from the rank-ordered sum, for any number
of ranks (the statistics are summed in index order, as the single process does).
"""

from __future__ import annotations

import numpy as np

from mxopt.core.checks import shown
from mxopt.distributed.collectives import Collectives, together
from mxopt.distributed.files import load_sharded, save_sharded
from mxopt.distributed.transport import collectives_for
from mxopt.kernels import backend_module
from mxopt.kernels.statistics import segment_statistics
from mxopt.training.buffer import ParameterBuffer
from mxopt.training.engine import StepStatistics, ordered_sums
from mxopt.training.groups import GroupMethods
from mxopt.training.updater import Updater, get_updater

__all__ = ["REDUCTIONS", "ShardedUpdater", "shares"]

#: ``"sum"``: the transport's own reduction (MPI's or NCCL's; the same bits on every rank,
#: not necessarily those of the rank order). ``"ordered"``: in rank order (bit-identical
#: to one process given the rank-ordered sum; on MPI an all-to-all and local additions).
REDUCTIONS = ("sum", "ordered")


def shares(sizes, parts: int) -> list[tuple[int, int]]:
    """Split tensors of ``sizes`` (in order) into ``parts`` runs ``[first, last)`` of whole
    tensors, each as close as the tensor boundaries allow to an equal number of elements
    (so LAMB's and LARS's per-tensor norms stay within one rank). Runs may be empty."""
    prefix = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    total, count = int(prefix[-1]), len(prefix) - 1
    bounds = [0]
    for k in range(1, parts):
        target = total * k / parts
        i = int(np.searchsorted(prefix, target))  # the first boundary at or past the target
        if i > count or (i > 0 and target - prefix[i - 1] <= prefix[i] - target):
            i -= 1  # the boundary before it is as close or closer
        bounds.append(min(max(i, bounds[-1]), count))
    bounds.append(count)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class ShardedUpdater(GroupMethods):
    """Data-parallel updates of a :class:`~mxopt.ParameterBuffer` with sharded state.

    Args:
        optimizer: any mxopt optimizer; its ``OptimizationState.batch_size`` is the global
            batch size (the gradients are summed over every rank's examples).
        buffer: the whole model, the same shapes in the same order on every rank.
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``; a single process without
            mpi4py is a world of one), or a :class:`Collectives`. CuPy buffers use NCCL,
            NumPy buffers MPI.
        reduce: ``"sum"`` (default) or ``"ordered"`` (see :data:`REDUCTIONS`).
        **options: every option of :func:`mxopt.get_updater` (``nonfinite``,
            ``max_grad_norm``, ``loss_scaler``, ``averaging``, ...), decided from the
            statistics of all ranks.
    """

    def __init__(self, optimizer, buffer: ParameterBuffer, comm=None, *, reduce: str = "sum",
                 **options):  # fmt: skip
        if not isinstance(buffer, ParameterBuffer):
            raise TypeError(f"ShardedUpdater: buffer must be a mxopt.ParameterBuffer, got "
                            f"{shown(buffer)}")  # fmt: skip
        if reduce not in REDUCTIONS:
            raise ValueError(f"ShardedUpdater: reduce must be one of {REDUCTIONS}, got "
                             f"{shown(reduce)}")  # fmt: skip
        self.buffer = buffer
        self.reduce = reduce
        self.collectives: Collectives = collectives_for(comm, buffer.backend)
        rank, size = self.collectives.rank, self.collectives.size
        self.index_ranges = shares(np.diff(buffer.offsets), size)
        #: element boundaries of every rank's share of the flat buffer
        self.offsets = np.array([buffer.offsets[first] for first, _ in self.index_ranges]
                                + [buffer.offsets[-1]], dtype=np.int64)  # fmt: skip
        first, last = self.index_ranges[rank]
        lo, hi = int(self.offsets[rank]), int(self.offsets[rank + 1])
        self.indices = buffer.indices[first:last]  # this rank's share
        # One rank: the share is the buffer, gradients included (nothing to reduce).
        dtype = buffer.weight.dtype
        grad = buffer.grad[lo:hi] if size == 1 else _module(buffer).zeros(hi - lo, dtype)
        self.share = ParameterBuffer({i: buffer.shapes[i] for i in self.indices}, dtype,
                                     weight=buffer.weight[lo:hi], grad=grad)  # fmt: skip
        self.updater: Updater = get_updater(optimizer, **options)

    # -- what the inner updater holds ---------------------------------------------------

    @property
    def optimizer(self):
        return self.updater.optimizer

    @property
    def states(self) -> dict:
        """The states of this rank's share (its indices only)."""
        return self.updater.states

    @property
    def groups(self):
        return self.updater.groups

    @property
    def loss_scaler(self):
        return self.updater.loss_scaler

    @property
    def rank(self) -> int:
        return self.collectives.rank

    @property
    def size(self) -> int:
        return self.collectives.size

    # -- steps --------------------------------------------------------------------------

    def broadcast_weights(self, root: int = 0) -> None:
        """Every rank's weights become ``root``'s (call once before training)."""
        self.collectives.broadcast(self.buffer.weight, root)

    def step(self) -> bool:
        """One data-parallel step from the gradients in ``buffer.grads`` (each rank's own,
        summed over its examples). Returns whether it was applied (False when skipped,
        on every rank alike). An error on any rank raises on every rank before any
        weight is written."""
        collectives, share = self.collectives, self.share
        if collectives.size == 1:  # a world of one: the share is the buffer, grads included
            return self.updater.update_buffer(share)
        # nonfinite="apply" without clipping or loss scaler decides nothing: no statistics
        needs = self._needs_statistics()
        failure, sums = None, np.zeros(len(self.indices) if needs else 0)
        counts = sums
        try:
            if collectives.size > 1:
                collectives.reduce_scatter(self.buffer.grad, share.grad, self.offsets,
                                           self.reduce == "ordered")  # fmt: skip
            if needs:
                sums, counts = segment_statistics(backend_module(share.backend), share.grad,
                                                  share.offsets)  # fmt: skip
                if not self.groups.trivial:  # frozen weights' gradients are unread
                    frozen = [self.groups.resolve(index)[2] for index in self.indices]
                    sums[frozen], counts[frozen] = 0.0, 0
        except Exception as error:  # agreed on below, so that no rank waits for this one
            failure = error
        statistics = self._agree(failure, sums, counts, needs)
        applied = self._update(statistics)
        if applied:
            collectives.all_gather(self.buffer.weight, self.offsets)
        return applied

    def _needs_statistics(self) -> bool:
        updater = self.updater
        return (updater.nonfinite != "apply" or updater.loss_scaler is not None
                or updater.max_grad_norm is not None)  # fmt: skip

    def _agree(self, failure, sums, counts, needs: bool) -> StepStatistics | None:
        """Every rank's failure flag and statistics, gathered; raises on every rank if any
        rank failed; else the global statistics, summed in index order (``None`` when the
        policy needs none, which every rank knows alike)."""
        per_rank = [last - first if needs else 0 for first, last in self.index_ranges]
        sizes = [2 * n + 1 for n in per_rank]
        mine = np.concatenate([[1.0 if failure is not None else 0.0], sums, counts])
        gathered = self.collectives.all_gather_values(mine, sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        failed = [r for r in range(self.size) if gathered[starts[r]] != 0.0]
        if failed:
            if failure is not None:
                raise failure
            raise RuntimeError(
                f"ShardedUpdater.step: rank(s) {failed} failed before the update; no rank "
                f"changed its weights or state"
            )
        if not needs:
            return None
        all_sums, all_counts = [], []
        for r, n in enumerate(per_rank):
            all_sums.append(gathered[starts[r] + 1 : starts[r] + 1 + n])
            all_counts.append(gathered[starts[r] + 1 + n : starts[r + 1]])
        all_sums, all_counts = np.concatenate(all_sums), np.concatenate(all_counts)
        culprits = [self.buffer.indices[k] for k in np.flatnonzero(all_counts)]
        # the engine adds the per-index sums (of finite values) from 0.0 in index order,
        # which is cumsum's order
        total = float(np.cumsum(all_sums)[-1]) if all_sums.size else 0.0
        return StepStatistics(total, int(all_counts.sum()), culprits)

    def _update(self, statistics: StepStatistics) -> bool:
        """The share's update, agreed on: a rank whose update raised makes every rank raise
        (the ranks that had updated then hold different weights: load a checkpoint)."""
        return together(
            self.collectives,
            lambda: self.updater.update_buffer(
                self.share, statistics=statistics, combine_sums=self._combine_sums
            ),
            lambda ranks: RuntimeError(
                f"ShardedUpdater.step: rank(s) {ranks} failed in their update; the ranks' "
                f"weights may differ now: load the last checkpoint"
            ),
        )

    def _combine_sums(self, per_weight) -> tuple[float, float]:
        """The global sums of an optimizer that reads sums across weights (Prodigy): every
        rank's per-weight pairs, gathered, added in index order as one process would."""
        counts = self.collectives.all_gather_values(np.array([float(len(per_weight))]),
                                                    [1] * self.size)  # fmt: skip
        mine = np.asarray(per_weight, dtype=np.float64).reshape(-1)
        gathered = self.collectives.all_gather_values(mine, [2 * int(n) for n in counts])
        return ordered_sums(gathered.reshape(-1, 2).tolist())

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, folder) -> None:
        """Every rank writes its share into ``folder``, then rank 0 a manifest naming them
        (see :mod:`mxopt.distributed.files`); atomic as a whole."""
        save_sharded(self, folder)

    @classmethod
    def load(cls, folder, buffer: ParameterBuffer, comm=None, *, optimizer=None,
             **options) -> ShardedUpdater:  # fmt: skip
        """The updater saved in ``folder``, on this job's ranks (any number of them),
        continuing bit for bit. ``optimizer``: as for :func:`mxopt.load_updater`."""
        return load_sharded(cls, folder, buffer, comm, optimizer=optimizer, **options)

    def averaged_weights(self):
        """The averaged weights (``averaging=EMA(...)`` or ``Polyak()``, or the optimizer's own
        evaluation point: Schedule-Free's x) of the whole model, gathered from every rank's
        share into a new flat array like ``buffer.weight``."""
        name = self.updater.average_name
        if name is None:
            raise ValueError("ShardedUpdater.averaged_weights: this updater has no averaging")
        full = _module(self.buffer).zeros_like(self.buffer.weight)
        for k, index in enumerate(self.indices):
            state = self.states.get(index)
            lo, hi = int(self.share.offsets[k]), int(self.share.offsets[k + 1])
            lo, hi = lo + int(self.offsets[self.rank]), hi + int(self.offsets[self.rank])
            full[lo:hi] = (state.arrays[name].reshape(-1) if state is not None
                           else self.buffer.weight[lo:hi])  # fmt: skip
        self.collectives.all_gather(full, self.offsets)
        return full


def _module(buffer):
    return np if buffer.backend == "numpy" else __import__("cupy")
