"""One timer thread for every connection's deadlines: keepalive, idle and token expiry.

Connections stay at one thread each (the handler's): instead of a second thread per
connection, each :class:`~wsauth_sync.connection.WebSocket` that needs a timer registers
here, and a single daemon thread wakes at the earliest due time, calls the connection's
``on_timer(now)`` and re-files it at the time it returns. The cost is one heap entry per
connection and one wake-up per due event, whatever the number of connections.

Because one thread serves everyone, ``on_timer`` must never wait on a connection's socket
or on a lock held across I/O: one peer that stops reading would delay every deadline.
The heap holds its items weakly, so a connection that has ended (and that nobody else
holds) is freed at once with its buffers, not when its next deadline comes due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from typing import Protocol

logger = logging.getLogger("wsauth_sync")


class Timed(Protocol):
    def on_timer(self, now: float) -> float | None:
        """Do what is due at ``now``; return the next monotonic due time, or None."""


class TimerThread:
    """A heap of ``(due, connection)`` served by one lazily started daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[Timed]]] = []
        # Each item's earliest pending due time: later entries for it are stale.
        self._due: weakref.WeakKeyDictionary[Timed, float] = weakref.WeakKeyDictionary()
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, item: Timed, due: float) -> None:
        """Call ``item.on_timer`` at monotonic time ``due`` (and as it asks after that).

        Only while something else holds ``item``: the heap keeps a weak reference.
        An item has one pending call, at the earliest time asked for; ``on_timer``
        then returns the next.
        """
        with self._wakeup:
            pending = self._due.get(item)
            if pending is not None and pending <= due:
                return
            self._due[item] = due
            heapq.heappush(self._heap, (due, next(self._order), weakref.ref(item)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="wsauth-timers")
                self._thread.start()
            if self._heap[0][2]() is item:
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            item = self._take_due()
            try:
                due = item.on_timer(time.monotonic())
            except Exception:  # a bug in one connection must not stop everyone's timers
                logger.exception("timer callback failed")
                due = None
            if due is not None:
                self.schedule(item, due)
            del item  # hold nothing while waiting

    def _take_due(self) -> Timed:
        """Wait for the next live item whose time has come."""
        with self._wakeup:
            while True:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                due, _, ref = heapq.heappop(self._heap)
                item = ref()
                if item is not None and self._due.get(item) == due:
                    del self._due[item]
                    return item
                del item  # ended and freed, or superseded by an earlier call


#: The process-wide timer thread shared by all connections.
TIMERS = TimerThread()
