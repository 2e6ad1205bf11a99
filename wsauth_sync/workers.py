"""Connection threads that are reused instead of started for every connection.

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
    """Run each job on its own thread, reusing idle threads."""

    def __init__(self, *, keep_idle: int = 64, name: str = "wsauth-conn") -> None:
        self.keep_idle = keep_idle
        self.name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._idle = 0
        self._closing = False
        self._threads: set[threading.Thread] = set()

    def submit(self, job: Job) -> None:
        """Start ``job`` now, on an idle thread or a new one."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
            thread = threading.Thread(target=self._work, args=(job,), daemon=True,
                                      name=f"{self.name}-{len(self._threads) + 1}")
            self._threads.add(thread)
        thread.start()

    def _work(self, job: Job | None) -> None:
        while job is not None:
            try:
                job()
            except Exception:  # a job's failure must not cost the pool a thread silently
                logger.exception("connection thread failed")
            with self._lock:
                if self._closing or self._idle >= self.keep_idle:
                    break
                self._idle += 1
            job = self._jobs.get()
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
