"""A watchdog for blocking calls on a socket: past its deadline, the socket is shut down.

Why a watchdog rather than a socket timeout: a database driver such as psycopg waits on
its socket in its own loop, with no deadline for a whole query. A server that is stopped
(SIGSTOP, a VM paused, a host whose kernel still acknowledges while the database never
answers) then holds the calling thread for ever: TCP keepalives and a server-side
``statement_timeout`` both need the other side to act. ``shutdown()`` on the socket wakes
the waiting thread at once with an error; the connection is then discarded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import suppress

logger = logging.getLogger("wsauth_sync")


class WatchedCall:
    """One call on a socket, cut at ``deadline`` unless disarmed first."""

    __slots__ = ("cut", "deadline", "fileno")

    def __init__(self, fileno: int, deadline: float) -> None:
        self.fileno = fileno
        self.deadline = deadline
        self.cut = False


class CallWatchdog:
    """Shuts down the socket of a call that overstays its deadline.

    One daemon thread serves every call; it runs only while calls are pending.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: set[WatchedCall] = set()
        self._running = False
        self._next = float("inf")

    def arm(self, fileno: int, deadline: float) -> WatchedCall:
        """Watch the call on socket ``fileno`` until :meth:`disarm`, cut at ``deadline``."""
        call = WatchedCall(fileno, deadline)
        with self._cond:
            self._calls.add(call)
            if not self._running:
                try:
                    threading.Thread(
                        target=self._run, daemon=True, name="wsauth-db-watchdog"
                    ).start()
                    self._running = True
                except RuntimeError:  # no thread to be had: the call runs unwatched
                    logger.warning("database call watchdog could not start")
            elif deadline < self._next:
                self._cond.notify()
        return call

    def disarm(self, call: WatchedCall) -> None:
        """Stop watching ``call``; after this the watchdog never touches its socket."""
        with self._cond:
            self._calls.discard(call)

    def _run(self) -> None:
        with self._cond:
            while self._calls:
                now = time.monotonic()
                for call in [call for call in self._calls if call.deadline <= now]:
                    self._calls.discard(call)
                    call.cut = True
                    _shut_down(call.fileno)
                if self._calls:
                    self._next = min(call.deadline for call in self._calls)
                    self._cond.wait(self._next - now)
            self._running = False
            self._next = float("inf")


def _shut_down(fileno: int) -> None:
    # shutdown() acts on the socket itself, so a duplicate descriptor is enough, and the
    # connection's own descriptor stays open until its owner closes it (no reuse race).
    try:
        duplicate = os.dup(fileno)
    except OSError:
        return
    try:
        sock = socket.socket(fileno=duplicate)  # family and type are read from the socket
    except OSError:
        os.close(duplicate)
        return
    with sock, suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


#: The process-wide watchdog of database calls.
WATCHDOG = CallWatchdog()
