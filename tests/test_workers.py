"""The reusable thread pool behind connections and time-limited verifiers."""

from __future__ import annotations

import functools
import threading
import time

from helpers import wait_for

from wsauth_sync.workers import WorkerPool


def test_jobs_beyond_max_threads_wait_their_turn_then_all_run() -> None:
    pool = WorkerPool(keep_idle=2, max_threads=2, name="test-pool")
    release = threading.Event()
    started: list[int] = []

    def job(n: int) -> None:
        started.append(n)
        release.wait(5)

    for n in range(5):
        pool.submit(functools.partial(job, n))
    assert wait_for(lambda: len(started) == 2)
    assert sum(t.name.startswith("test-pool") for t in threading.enumerate()) == 2
    release.set()
    assert wait_for(lambda: sorted(started) == [0, 1, 2, 3, 4])
    # Queued jobs were taken by busy threads as they finished, so the two threads are
    # idle again and the next job needs no new thread.
    assert wait_for(lambda: pool._idle == 2)
    pool.submit(lambda: started.append(5))
    assert wait_for(lambda: 5 in started)
    assert sum(t.name.startswith("test-pool") for t in threading.enumerate()) == 2
    pool.close(time.monotonic() + 5)
    assert wait_for(lambda: not any(t.name.startswith("test-pool") for t in threading.enumerate()))
