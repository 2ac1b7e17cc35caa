"""mxopt's chunk pool (mxopt.kernels.threads): every chunk once, errors handed back, a
caller that never waits for an unstarted chunk, and the back-off after a stall."""

from __future__ import annotations

import threading
import time

import pytest

from mxopt.kernels import threads


def test_every_chunk_runs_exactly_once_across_threads():
    pool = threads.ChunkPool(3)
    for chunks in (1, 2, 7, 64):
        seen = [0] * chunks
        lock = threading.Lock()

        def task(k, seen=seen, lock=lock):
            with lock:
                seen[k] += 1

        pool.run(task, chunks)
        assert seen == [1] * chunks


def test_an_error_in_a_chunk_reaches_the_caller_after_every_chunk_ended():
    pool = threads.ChunkPool(2)
    ended = []

    def task(k):
        if k == 3:
            raise ZeroDivisionError("chunk 3")
        ended.append(k)

    with pytest.raises(ZeroDivisionError, match="chunk 3"):
        pool.run(task, 6)
    assert sorted(ended) == [0, 1, 2, 4, 5]
    ended.clear()
    pool.run(task, 3)  # the pool still works
    assert sorted(ended) == [0, 1, 2]


def _on_worker() -> bool:
    return threading.current_thread() is not threading.main_thread()


def _step(pool, chunks, worker_chunk):
    """``pool.run`` where the caller's first chunk waits until a worker has taken one (so
    the workers surely take part) unless the pool runs this step serially; a worker's
    chunk runs ``worker_chunk()``. Returns the number of chunks the workers ran."""
    parallel = pool._serial_steps == 0
    started = threading.Event()
    counts = {"worker": 0, "caller": 0}

    def task(k):
        if _on_worker():
            counts["worker"] += 1
            started.set()
            worker_chunk(counts)
        else:
            if parallel and counts["caller"] == 0:
                assert started.wait(5)
            counts["caller"] += 1

    pool.run(task, chunks)
    assert counts["worker"] + counts["caller"] == chunks
    return counts["worker"]


def test_the_caller_does_the_chunks_a_held_up_worker_never_started():
    pool = threads.ChunkPool(2)

    def held_up(counts):  # until the caller has done every other chunk
        deadline = time.monotonic() + 5
        while counts["caller"] < 19 and time.monotonic() < deadline:
            time.sleep(0.001)

    assert _step(pool, 20, held_up) == 1


def test_a_stalled_step_makes_the_next_steps_serial_with_a_doubling_back_off():
    pool = threads.ChunkPool(2)

    def stall(counts):
        time.sleep(0.05)  # far longer than a chunk on the caller

    _step(pool, 8, stall)
    assert pool.stalls == 1
    for _ in range(threads.MIN_BACKOFF):  # the back-off: serial steps only
        assert _step(pool, 8, stall) == 0
    assert _step(pool, 8, stall) > 0  # parallel again, stalled again: a longer back-off
    assert pool.stalls == 2
    for _ in range(2 * threads.MIN_BACKOFF):
        assert _step(pool, 8, stall) == 0
    assert _step(pool, 64, lambda counts: None) > 0  # a clean parallel step resets it
    assert pool.stalls == 2 and pool._backoff == threads.MIN_BACKOFF


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("MXOPT_NUM_THREADS", "3")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "5")
    assert threads.default_threads() == 3
    monkeypatch.delenv("MXOPT_NUM_THREADS")
    assert threads.default_threads() == 5
    monkeypatch.setenv("MXOPT_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="MXOPT_NUM_THREADS must be a positive integer, got 'm"):
        threads.default_threads()
    monkeypatch.setenv("MXOPT_NUM_THREADS", "1")
    assert not threads.ChunkPool(threads.default_threads()).parallel


def test_two_callers_at_once_each_get_every_chunk_of_their_own_step():
    pool = threads.ChunkPool(3)
    results = {}

    def caller(name):
        for _ in range(50):
            seen = [0] * 16
            lock = threading.Lock()

            def task(k, seen=seen, lock=lock):
                time.sleep(0.0001)
                with lock:
                    seen[k] += 1

            pool.run(task, 16)
            results.setdefault(name, []).append(seen == [1] * 16)

    callers = [threading.Thread(target=caller, args=(n,)) for n in ("a", "b")]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert results == {"a": [True] * 50, "b": [True] * 50}
