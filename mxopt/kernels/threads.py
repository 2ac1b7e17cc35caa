"""mxopt's own threads for big arrays: workers that block, and a caller that works too.

A step over a big array is cut into chunks, each run by the *serial* compiled kernel on
its slice (the kernels release the GIL), so the result has exactly the bits of one serial
call. The chunks are shared out by a counter: the calling thread takes chunks like any
worker and never waits for a chunk nobody has started, so when the other cores are busy
(a laptop, a shared server, a spaCy run with its own threads) the caller simply does the
work itself instead of stalling until a descheduled worker gets the CPU back. Workers
sleep on a condition variable between steps: they never spin, so they take no time from
other processes.

One stall remains possible: a worker that took a chunk and was then descheduled. The
pool notices when the caller waited for its workers at the end of a step for much longer
than a chunk takes, and then runs the next steps on the calling thread alone, for a
number of steps that doubles after each such stall (up to :data:`MAX_BACKOFF`) and
returns to its minimum after a clean parallel step.

Nothing here changes a process-wide setting: no thread pool of Numba, OpenMP or any
other library is used or configured. ``MXOPT_NUM_THREADS`` sets the number of threads
(``NUMBA_NUM_THREADS`` is honoured too); ``1`` turns the pool off.
"""

from __future__ import annotations

import os
import threading
import time

from mxopt.core.checks import shown

__all__ = ["ChunkPool", "default_threads", "pool"]

#: Steps run on the calling thread after a stall: doubles up to this, from MIN_BACKOFF.
MIN_BACKOFF = 4
MAX_BACKOFF = 1024

#: A final wait is a stall when it is longer than this many chunk times (and 0.2 ms).
STALL_FACTOR = 4.0


def default_threads() -> int:
    """``MXOPT_NUM_THREADS``, else ``NUMBA_NUM_THREADS``, else the CPUs this process may
    use (at most 16: a step is memory-bound long before that)."""
    for variable in ("MXOPT_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = os.environ.get(variable)
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(
                    f"{variable} must be a positive integer, got {shown(value)}"
                ) from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 16))


class _Job:
    """One parallel step: ``task(k)`` for every chunk ``k``."""

    __slots__ = ("chunks", "done", "error", "finished", "next", "task")

    def __init__(self, task, chunks: int):
        self.task = task
        self.chunks = chunks
        self.next = 0  # the next chunk to claim (under the pool's lock)
        self.done = 0
        self.error = None
        self.finished = threading.Condition(threading.Lock())

    def claim(self, lock) -> int | None:
        with lock:
            if self.next >= self.chunks:
                return None
            k = self.next
            self.next += 1
            return k

    def run(self, k: int) -> None:
        try:
            self.task(k)
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            self.error = error
        with self.finished:
            self.done += 1
            if self.done == self.chunks:
                self.finished.notify_all()


class ChunkPool:
    """``run(task, chunks)``: ``task(k)`` for ``k`` in ``range(chunks)``, on the calling
    thread and ``threads - 1`` workers (started on first use, after a fork too)."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job: _Job | None = None
        self._generation = 0
        self._workers: list = []
        self._pid = None
        self._serial_steps = 0  # steps left to run on the calling thread alone
        self._backoff = MIN_BACKOFF
        self.stalls = 0  # how many times a final wait was a stall (for the benchmark)

    # -- workers ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._pid = os.getpid()
        self._workers = []
        self._job = None
        for number in range(self.threads - 1):
            worker = threading.Thread(target=self._work, name=f"mxopt-{number + 1}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        seen = 0
        while True:
            with self._wake:
                while self._generation == seen:
                    self._wake.wait()
                seen = self._generation
                job = self._job
            if job is None:
                continue
            while (k := job.claim(self._lock)) is not None:
                job.run(k)

    # -- running ---------------------------------------------------------------------------

    @property
    def parallel(self) -> bool:
        """Whether the next step may use the workers."""
        return self.threads > 1

    def run(self, task, chunks: int) -> None:
        """Run ``task(k)`` for every chunk; returns when all are done (re-raises the first
        error a chunk raised)."""
        if chunks <= 1 or self.threads == 1 or self._serial_steps > 0:
            if self._serial_steps > 0:
                self._serial_steps -= 1
            for k in range(chunks):
                task(k)
            return
        if self._pid != os.getpid():  # first use, or a forked child: no workers yet
            with self._start_lock:
                if self._pid != os.getpid():
                    self._start()
        job = _Job(task, chunks)
        with self._wake:
            self._job = job
            self._generation += 1
            self._wake.notify_all()
        started = time.perf_counter()
        mine = 0
        while (k := job.claim(self._lock)) is not None:
            job.run(k)
            mine += 1
        worked = time.perf_counter() - started
        with job.finished:
            while job.done < job.chunks:
                job.finished.wait()
        waited = time.perf_counter() - started - worked
        self._note_wait(waited, worked / max(1, mine))
        if job.error is not None:
            raise job.error

    def _note_wait(self, waited: float, per_chunk: float) -> None:
        if waited > max(2e-4, STALL_FACTOR * per_chunk):
            self.stalls += 1
            self._serial_steps = self._backoff
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        else:
            self._backoff = MIN_BACKOFF


_pool: ChunkPool | None = None
_pool_lock = threading.Lock()


def pool() -> ChunkPool:
    """The process's pool, with :func:`default_threads` threads (made on first use)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ChunkPool(default_threads())
    return _pool
