"""Make every step of a test cut its arrays into chunks for several threads."""

from __future__ import annotations

from mxopt.kernels import cpu as _cpu
from mxopt.kernels import threads
from mxopt.kernels.kernel import REDUCE_BLOCK


def cut_everything(monkeypatch, threads_count: int = 3) -> None:
    """Every array of every step is cut in chunks of one reduction block, and run by a pool
    of ``threads_count`` threads (whatever the machine and the environment)."""
    monkeypatch.setattr(_cpu, "_parallel_min_size", 0)
    monkeypatch.setattr(_cpu, "MIN_CHUNK", REDUCE_BLOCK)
    monkeypatch.setattr(threads, "_pool", threads.ChunkPool(threads_count))


def cut_nothing(monkeypatch) -> None:
    """Every step runs serially on the calling thread."""
    monkeypatch.setattr(_cpu, "_parallel_min_size", 1 << 62)
