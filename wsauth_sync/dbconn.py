"""One database connection per thread, closed when its thread ends or its store goes.

A key store opens a DB-API connection in each thread that asks it something and keeps it
in thread-local storage. When the thread ends, that storage is dropped: left to the
garbage collector, the connection would be closed by its own finalizer, which Python
3.13's ``sqlite3`` and ``psycopg`` report as a ``ResourceWarning`` (an error for
applications that run with ``-W error``). :class:`ThreadConnection` closes it
explicitly instead, at the same moment.

Two cases where closing would be wrong, and is not done:

* in a process forked from the one that opened the connection (``multiprocessing``,
  gunicorn ``--preload``): the child shares the parent's socket, and PostgreSQL's
  ``Terminate`` message sent on close would end the parent's session;
* at interpreter exit, for a thread still running (a daemon verifier thread may be in the
  middle of a query): the process is ending and the database notices on its own.
"""

from __future__ import annotations

import os
import weakref
from contextlib import suppress
from typing import Any


class ThreadConnection:
    """A connection held by one thread's local storage (its only reference)."""

    __slots__ = ("__weakref__", "_finalizer", "connection", "pid")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.pid = os.getpid()
        self._finalizer = weakref.finalize(self, _close_quietly, connection, self.pid)
        # A daemon thread may still be using it at exit. (mypy's stubs for Python 3.9
        # do not declare the documented ``atexit`` attribute writable.)
        self._finalizer.atexit = False  # type: ignore[misc,unused-ignore]

    @property
    def inherited(self) -> bool:
        """True in a process forked after the connection was opened: not ours to use."""
        return self.pid != os.getpid()

    def close(self) -> None:
        """Close the connection now (at most once; never in a forked child)."""
        self._finalizer()


def _close_quietly(connection: Any, pid: int) -> None:
    if pid != os.getpid():
        return  # a forked child: the socket is the parent's as much as ours
    with suppress(Exception):
        connection.close()
