"""Handshakes in progress: the accept thread reads every pending request head itself.

A connection gets a thread only once its request head is whole (or refused). Until then
it is a non-blocking socket in the accept thread's selector with an h11 parser and one
absolute deadline, TLS handshake included. Silent and slow clients therefore cost a file
descriptor and a few KiB, not a thread, and the caps on them can be generous.

When a cap is reached the *oldest* pending handshake is dropped to make room, as nginx
and HAProxy drop idle connections. A client whose head arrives with its connection (every
real client) is never the oldest, so an attacker holding slots cannot keep it out: it
only evicts its own connections. One address may hold ``max_per_ip`` pending handshakes
(its oldest is dropped past that), so one host cannot evict everyone else's slow
clients either; trusted proxies, which stand for many clients, are exempt.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable, Collection
from typing import Literal, Union

from .core import audit
from .core.errors import RequestTimeout
from .core.handshake import Rejected, ServerHandshake
from .core.http11 import HEAD_READ_SIZE as _READ_SIZE
from .core.request import Address

#: Handshakes in progress at once by default (memory, not threads: a few KiB each).
DEFAULT_MAX_PENDING = 1024
#: Handshakes in progress from one client address by default.
DEFAULT_MAX_PENDING_PER_IP = 64


Head = Union[Literal[True], Rejected]  # a runtime alias: "|" needs Python 3.10
#: Called (on the accept thread) when a head is whole or refused: hand it to a thread.
Ready = Callable[[socket.socket, Address, ServerHandshake, Head, float], None]


class _Pending:
    __slots__ = ("address", "deadline", "handshake", "ip", "sock", "tls_done", "waiting")

    def __init__(
        self,
        sock: socket.socket,
        address: Address,
        handshake: ServerHandshake,
        deadline: float,
        *,
        tls_done: bool,
    ) -> None:
        self.sock = sock
        self.address = address
        self.ip = address[0]
        self.handshake = handshake
        self.deadline = deadline
        self.tls_done = tls_done
        self.waiting: int | None = None  # the selector event it is registered for


class PendingHeads:
    """Read request heads for many connections from one thread, under caps.

    Args:
        make_handshake: a fresh :class:`ServerHandshake` for a client address.
        selector: the accept loop's selector; pending sockets are registered with
            themselves as ``data``.
        ready: called with each head that is whole or refused (see :data:`Ready`).
        timeout: seconds from accept to a whole head (TLS included).
        max_pending: handshakes in progress at once; the oldest is dropped past it.
        max_per_ip: handshakes in progress from one address; its oldest is dropped.
        exempt: addresses without a per-address cap (trusted proxies).
        ssl_context: read TLS; the TLS handshake runs here too, non-blocking.
    """

    def __init__(
        self,
        *,
        make_handshake: Callable[[Address], ServerHandshake],
        selector: selectors.BaseSelector,
        ready: Ready,
        timeout: float,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
        exempt: Collection[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._make_handshake = make_handshake
        self._selector = selector
        self._ready = ready
        self._timeout = timeout
        self.max_pending = max_pending
        self.max_per_ip = max_per_ip
        self._exempt = frozenset(exempt)
        self._ssl_context = ssl_context
        # Insertion order is deadline order (one timeout for all): the first is the
        # oldest, the next to expire and the first to evict.
        self._all: dict[_Pending, None] = {}
        self._by_ip: dict[str, dict[_Pending, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def count(self, ip: str) -> int:
        """Handshakes in progress from ``ip``."""
        return len(self._by_ip.get(ip, ()))

    def admit(self, sock: socket.socket, address: Address) -> None:
        """Start reading the head of a new connection, making room if a cap is reached."""
        ip = address[0]
        own = self._by_ip.get(ip)
        if own is not None and len(own) >= self.max_per_ip and ip not in self._exempt:
            self._drop(next(iter(own)), "pending_evicted")
        if len(self._all) >= self.max_pending:
            self.drop_oldest("pending_evicted")
        sock.setblocking(False)
        tls_done = self._ssl_context is None
        if not tls_done:
            assert self._ssl_context is not None
            try:
                sock = self._ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                audit.log_dropped(client=address, reason="tls_handshake_failed")
                sock.close()
                return
        pending = _Pending(
            sock,
            address,
            self._make_handshake(address),
            time.monotonic() + self._timeout,
            tls_done=tls_done,
        )
        self._all[pending] = None
        self._by_ip.setdefault(ip, {})[pending] = None
        self.advance(pending)  # the head has usually arrived with the connection

    def advance(self, pending: _Pending) -> None:
        """Read what is there; hand the head over once whole, or wait for more."""
        if pending not in self._all:
            return  # dropped to make room earlier in the same batch of selector events
        sock = pending.sock
        try:
            if not pending.tls_done:
                assert isinstance(sock, ssl.SSLSocket)
                sock.do_handshake()
                pending.tls_done = True
            while True:  # until the kernel (and TLS) buffers are empty
                head = pending.handshake.receive_head(sock.recv(_READ_SIZE))
                if head is not None:
                    self._hand_over(pending, head)
                    return
        except (BlockingIOError, ssl.SSLWantReadError):
            self._wait(pending, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._wait(pending, selectors.EVENT_WRITE)
        except OSError:  # a reset, a plaintext client on the TLS port, a bad ClientHello
            self._drop(pending, "tls_handshake_failed" if not pending.tls_done else "reset")

    def time_left(self, now: float) -> float | None:
        """Seconds until the next deadline, or None with nothing pending."""
        for oldest in self._all:
            return max(0.0, oldest.deadline - now)
        return None

    def expire(self, now: float) -> None:
        """Refuse (408) or drop every handshake whose deadline has passed."""
        while self._all:
            oldest = next(iter(self._all))
            if oldest.deadline > now:
                return
            if not oldest.tls_done:
                self._drop(oldest, "tls_timeout")
            else:
                self._hand_over(
                    oldest, oldest.handshake.reject(RequestTimeout("handshake_timeout"))
                )

    def drop_oldest(self, reason: str) -> None:
        """Drop the oldest handshake in progress (to make room), logging ``reason``."""
        if self._all:
            self._drop(next(iter(self._all)), reason)

    def close_all(self) -> None:
        """Drop every pending handshake (the server is shutting down)."""
        for pending in list(self._all):
            self._forget(pending)
            pending.sock.close()

    def _wait(self, pending: _Pending, event: int) -> None:
        if pending.waiting == event:
            return
        if pending.waiting is None:
            self._selector.register(pending.sock, event, pending)
        else:
            self._selector.modify(pending.sock, event, pending)
        pending.waiting = event

    def _hand_over(self, pending: _Pending, head: Head) -> None:
        self._forget(pending)
        self._ready(pending.sock, pending.address, pending.handshake, head, pending.deadline)

    def _drop(self, pending: _Pending, reason: str) -> None:
        self._forget(pending)
        audit.log_dropped(client=pending.address, reason=reason)
        pending.sock.close()

    def _forget(self, pending: _Pending) -> None:
        del self._all[pending]
        own = self._by_ip[pending.ip]
        del own[pending]
        if not own:
            del self._by_ip[pending.ip]
        if pending.waiting is not None:
            self._selector.unregister(pending.sock)
            pending.waiting = None
