"""Threads that are reused instead of started for every job (connections, verifier calls).

Starting a thread costs a system call and a wait for the new thread to run; at thousands
of handshakes a second that is a large share of the work. A :class:`WorkerPool` keeps up
to ``keep_idle`` finished threads waiting for the next connection, and starts a new one
only when none is free. Each job still has its thread to itself until it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("wsauth_sync")

Job = Callable[[], None]


class WorkerPool:
    """Run each job on a thread of its own, reusing idle threads.

    Args:
        keep_idle: finished threads kept waiting for the next job.
        max_threads: when every one of this many threads is busy, jobs wait their turn;
            None starts a thread for every job that finds none idle.
        name: thread name prefix.
    """

    def __init__(
        self, *, keep_idle: int = 64, max_threads: int | None = None, name: str = "wsauth-conn"
    ) -> None:
        self.keep_idle = keep_idle
        self.max_threads = max_threads
        self.name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._idle = 0
        self._waiting = 0  # jobs queued for a busy thread to pick up next
        self._closing = False
        self._threads: set[threading.Thread] = set()

    def submit(self, job: Job) -> None:
        """Start ``job`` on an idle thread or a new one, or queue it at ``max_threads``."""
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self.max_threads is None or len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._work,
                    args=(job,),
                    daemon=True,
                    name=f"{self.name}-{len(self._threads) + 1}",
                )
                self._threads.add(thread)
                thread.start()
                return
            else:
                self._waiting += 1
            self._jobs.put(job)

    def _work(self, job: Job | None) -> None:
        try:
            while job is not None:
                try:
                    job()
                except Exception:  # a job's failure must not cost the pool a thread silently
                    logger.exception("pool thread failed")
                with self._lock:
                    if self._waiting:
                        self._waiting -= 1  # a queued job is ours: take it without idling
                    elif self._closing or self._idle >= self.keep_idle:
                        break
                    else:
                        self._idle += 1
                job = self._jobs.get()
        finally:  # even a BaseException ending the thread must not leave it counted
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self, deadline: float) -> None:
        """Let idle threads exit and wait for busy ones until monotonic ``deadline``."""
        with self._lock:
            self._closing = True
            idle, self._idle = self._idle, 0
            threads = list(self._threads)
        for _ in range(idle):
            self._jobs.put(None)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
