"""Keepalive for one connection, without I/O: when to Ping, which Pong counts, when to give up.

RFC 6455 §5.5.3: a Pong echoes the payload of the Ping it answers. Ours is random, so
only a peer that read our Ping can answer it, and that alone counts as life. Other
frames, or bytes waiting unread in the kernel, do not: a peer that sends but never reads
would otherwise keep its connection (and a sending handler's thread) for ever.
"""

from __future__ import annotations

import os


class Keepalive:
    """The Ping in flight and the deadlines around it.

    Args:
        interval: seconds from one answered Ping to the next.
        timeout: seconds to wait for the Pong.
        now: monotonic time the connection opened.
    """

    def __init__(self, *, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._answered = now
        self._sent: float | None = None
        self._payload = b""

    @property
    def waiting(self) -> bool:
        """True while a Ping is unanswered."""
        return self._sent is not None

    def next_due(self) -> float:
        """When :meth:`ping` or :meth:`timed_out` next has something to say."""
        return self._answered + self.interval if self._sent is None else self._sent + self.timeout

    def ping(self, now: float) -> bytes | None:
        """The payload of a Ping to send now, if one is due."""
        if self._sent is not None or now < self._answered + self.interval:
            return None
        self._sent, self._payload = now, os.urandom(8)
        return self._payload

    def pong(self, payload: bytes, now: float) -> bool:
        """True if ``payload`` answers our Ping: the peer is alive."""
        if self._sent is None or payload != self._payload:
            return False
        self._sent, self._answered = None, now
        return True

    def excuse(self, now: float) -> None:
        """Count the Ping as answered: its Pong waits behind data the handler has not
        taken yet, which is the handler's backpressure, not a dead peer."""
        self._sent, self._answered = None, now

    def timed_out(self, now: float) -> bool:
        """True once the Pong is overdue."""
        return self._sent is not None and now >= self._sent + self.timeout
