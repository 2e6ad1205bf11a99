"""A blocking WebSocket over a socket, driven by wsproto, for one handler thread.

The handler's own thread does all the reading: :meth:`WebSocket.recv` reads the socket,
feeds wsproto and answers pings on the way, so a connection costs one thread, not two.
Not reading is backpressure: bytes stay in the kernel and the client's sends slow down.
wsproto checks the framing rules (masking, reserved bits, control frames, UTF-8); it has
no message size limit, so this module counts bytes across fragments and closes with
1009 past ``max_message_size`` (RFC 6455 §10.4).
"""

from __future__ import annotations

import _socket
import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from .errors import ConnectionClosed
from .handshake import Accept
from .request import UpgradeRequest
from .timers import TIMERS
from .verifiers import Identity

Data = str | bytes

#: Largest message accepted by default (websockets uses the same): 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: How long to wait for the peer's Close after sending ours (RFC 6455 §7.1.1).
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Frames one message may span (RFC 6455 §10.4: floods of tiny fragments).
DEFAULT_MAX_FRAGMENTS = 1024
#: Keepalive: ping after this much silence, give up (1011) this long after the ping.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
# recv() allocates its whole buffer while it waits, so an idle connection should ask for
# little; a read that fills the buffer means bulk data, and the next read asks for more.
_MIN_READ = 1024
_MAX_READ = 256 * 1024
# Close reasons sent by the library are fixed, short and secret-free (RFC 6455 §5.5).
_MAX_REASON_BYTES = 123


class WebSocket:
    """An accepted WebSocket, handed to the handler with the authenticated identity.

    Args:
        sock: the connected socket, right after the 101 response was sent.
        accept: the core's decision: identity, subprotocol, redacted request.
        trailing_data: bytes that arrived with the request head (eager frames).
        max_message_size: bytes per message, across fragments; more closes with 1009.
        max_fragments: frames per message; more closes with 1009.
        close_timeout: seconds to wait for the peer's Close before dropping TCP.
        ping_interval: seconds of silence from the peer before a keepalive Ping;
            None disables keepalive.
        ping_timeout: seconds to wait for any data after that Ping; then close 1011.
        idle_timeout: seconds without a message from the peer before closing with
            1001; None (the default) never.
        expires_at: Unix time at which the credential expires: the connection is
            closed with 1008 then (see :attr:`Identity.expires_at`).
    """

    def __init__(self, sock: socket.socket, *, accept: Accept, trailing_data: bytes = b"",
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_fragments: int = DEFAULT_MAX_FRAGMENTS,
                 close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
                 ping_interval: float | None = DEFAULT_PING_INTERVAL,
                 ping_timeout: float = DEFAULT_PING_TIMEOUT,
                 idle_timeout: float | None = None,
                 expires_at: float | None = None) -> None:
        self._sock = sock
        self._accept = accept
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.idle_timeout = idle_timeout
        now = time.monotonic()
        self._last_data = now  # any bytes from the peer: it is alive
        self._last_message = now  # a whole message: it is not idle
        self._ping_sent: float | None = None
        self._hard_close: float | None = None
        # Expiry as a monotonic deadline, so clock changes cannot move it.
        self._expires = None if expires_at is None else now + (expires_at - time.time())
        self._ws = Connection(ConnectionType.SERVER)
        self._send_lock = threading.Lock()  # wsproto state and socket writes
        self._read_lock = threading.Lock()  # one reader at a time
        self._closed = threading.Event()
        self._messages: deque[Data] = deque()
        self._parts: list[Any] = []
        self._size = 0
        self._fragments = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._pending = trailing_data
        self._read_size = _MIN_READ
        first_due = self._next_due(now)
        if first_due is not None:
            TIMERS.schedule(self, first_due)

    @property
    def identity(self) -> Identity:
        """Who authenticated this connection."""
        return self._accept.identity

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol selected in the handshake, if any."""
        return self._accept.subprotocol

    @property
    def request(self) -> UpgradeRequest:
        """The opening handshake request, with every credential redacted."""
        return self._accept.request

    @property
    def closed(self) -> bool:
        """True once the closing handshake completed or the TCP connection ended."""
        return self._closed.is_set()

    # -- receiving -----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Call from one thread at a time (normally the handler's).

        Raises:
            ConnectionClosed: the connection closed; ``code`` says how.
            TimeoutError: no message within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while not self._messages:
                if self._closed.is_set():
                    raise ConnectionClosed(self.close_code or 1006, self.close_reason)
                if self._pending:
                    data, self._pending = self._pending, b""
                else:
                    data = self._read(deadline)
                self._receive(data)
            return self._messages.popleft()

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def _read(self, deadline: float | None) -> bytes:
        if deadline is not None and not wait_readable(self._sock, deadline):
            raise TimeoutError("no data before the timeout")
        try:
            data = self._sock.recv(self._read_size)
        except OSError:
            return b""  # reset or shut down locally: same as end of stream
        if len(data) == self._read_size:
            self._read_size = min(self._read_size * 4, _MAX_READ)
        elif len(data) < _MIN_READ:
            self._read_size = _MIN_READ
        return data

    def _receive(self, data: bytes) -> None:
        self._last_data = time.monotonic()
        with self._send_lock:
            self._ws.receive_data(data or None)  # None tells wsproto the stream ended
            for event in self._ws.events():
                if isinstance(event, Message):
                    self._on_message(event)
                elif isinstance(event, Ping):
                    self._send_locked(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._on_close(event)
                # Pong: nothing to do; keepalive is the peer's business unless enabled.
                if self._closed.is_set():
                    return

    def _on_message(self, event: Message[Any]) -> None:
        chunk = event.data
        # Text arrives decoded; 4 bytes per character bounds its size without encoding.
        if isinstance(chunk, str) and self._size + 4 * len(chunk) > self.max_message_size:
            self._size += len(chunk.encode("utf-8"))
        else:
            self._size += len(chunk)
        self._fragments += event.frame_finished
        if self._size > self.max_message_size or self._fragments > self.max_fragments:
            self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
            return
        if chunk:
            self._parts.append(chunk)
        if event.message_finished:
            self._last_message = time.monotonic()
            parts, self._parts, self._size, self._fragments = self._parts, [], 0, 0
            if not parts:
                parts = ["" if isinstance(event, TextMessage) else b""]
            if isinstance(event, TextMessage):
                self._messages.append("".join(parts) if len(parts) > 1 else parts[0])
            else:
                self._messages.append(b"".join(parts) if len(parts) > 1 else bytes(parts[0]))

    def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer with the same code.
            self._send_locked(self._ws.send(event.response()))
            self._finish(event.code, event.reason or "")
        elif state is ConnectionState.CLOSED:
            # Either the answer to our Close, or wsproto reporting the stream ended.
            self._finish(self.close_code or event.code, event.reason or "")
        else:
            # wsproto found a protocol error (1002) or invalid UTF-8 (1007): fail the
            # connection (RFC 6455 §7.1.7); the reason stays generic.
            self._fail(event.code, "")

    def _fail(self, code: int, reason: str) -> None:
        """Send a Close for a local failure, then drop TCP without waiting."""
        if self._ws.state is ConnectionState.OPEN:
            self._send_locked(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = int(code), reason
        self._closed.set()
        _shutdown(self._sock)

    # -- sending -------------------------------------------------------------------

    def send(self, message: Data) -> None:
        """Send one message: ``str`` as text, ``bytes`` as binary. Thread-safe.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if isinstance(message, str):
            event: TextMessage | BytesMessage = TextMessage(data=message)
        else:
            event = BytesMessage(data=bytes(message))
        with self._send_lock:
            self._check_open()
            self._send_locked(self._ws.send(event))

    def ping(self, payload: bytes = b"") -> None:
        """Send a Ping; the peer's Pong is absorbed by :meth:`recv`. Thread-safe."""
        with self._send_lock:
            self._check_open()
            self._send_locked(self._ws.send(Ping(payload=payload)))

    def _check_open(self) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)

    def _send_locked(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            self._finish(CloseReason.ABNORMAL_CLOSURE, "")

    # -- timers (run on the shared timer thread) -----------------------------------

    def _next_due(self, now: float) -> float | None:
        if self._closed.is_set():
            return None
        candidates = [self._hard_close, self._expires]
        if self.idle_timeout is not None:
            candidates.append(self._last_message + self.idle_timeout)
        if self.ping_interval is not None:
            candidates.append(self._last_data + self.ping_interval if self._ping_sent is None
                              else self._ping_sent + self.ping_timeout)
        due = [value for value in candidates if value is not None]
        return max(now, min(due)) if due else None

    def on_timer(self, now: float) -> float | None:
        """Keepalive, idle and expiry checks; called by the shared timer thread."""
        if self._closed.is_set():
            return None
        if self._hard_close is not None and now >= self._hard_close:
            self._finish(self.close_code or CloseReason.ABNORMAL_CLOSURE, self.close_reason)
            return None
        if self._hard_close is None:
            if self._expires is not None and now >= self._expires:
                self._start_close(CloseReason.POLICY_VIOLATION, "credential expired", now)
            elif self.idle_timeout is not None and \
                    now >= self._last_message + self.idle_timeout:
                self._start_close(CloseReason.GOING_AWAY, "idle timeout", now)
            elif self.ping_interval is not None:
                self._keepalive(now)
        return self._next_due(now)

    def _keepalive(self, now: float) -> None:
        if self._ping_sent is not None:
            # Any byte since the ping (or waiting unread in the kernel) proves life.
            if self._last_data >= self._ping_sent or wait_readable(self._sock, now):
                self._ping_sent = None
            elif now >= self._ping_sent + self.ping_timeout:
                self._fail_from_timer(CloseReason.INTERNAL_ERROR, "keepalive ping timeout")
                return
        if self._ping_sent is None and now >= self._last_data + (self.ping_interval or 0):
            if self._send_lock.acquire(timeout=1.0):
                try:
                    if self._ws.state is ConnectionState.OPEN:
                        self._send_locked(self._ws.send(Ping(payload=b"wsauth")))
                finally:
                    self._send_lock.release()
            self._ping_sent = now

    def close_soon(self, code: int, reason: str = "") -> None:
        """Start the closing handshake from any thread without waiting for it.

        A handler reading the connection sees the peer's answer as
        :class:`ConnectionClosed`; TCP is dropped after ``close_timeout`` regardless.
        """
        now = time.monotonic()
        self._start_close(code, reason, now)
        TIMERS.schedule(self, now + self.close_timeout)

    def _start_close(self, code: int, reason: str, now: float) -> None:
        """Send our Close without waiting: a reading handler sees the peer's answer."""
        if self._send_lock.acquire(timeout=1.0):
            try:
                if self._ws.state is ConnectionState.OPEN:
                    self.close_code, self.close_reason = code, reason
                    self._send_locked(self._ws.send(CloseConnection(code=code, reason=reason)))
            finally:
                self._send_lock.release()
        self._hard_close = now + self.close_timeout

    def _fail_from_timer(self, code: int, reason: str) -> None:
        # A peer that stopped answering may also have stopped reading: never block here.
        if self._send_lock.acquire(timeout=1.0):
            try:
                self._fail(code, reason)
            finally:
                self._send_lock.release()
        else:
            self._finish(code, reason)

    # -- closing -------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake, then end the TCP connection. Thread-safe.

        Waits up to ``close_timeout`` for the peer's Close. Safe to call more than once.
        """
        if len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
            raise ValueError("close reason is limited to 123 bytes of UTF-8")
        with self._send_lock:
            if self._ws.state is ConnectionState.OPEN:
                self.close_code, self.close_reason = code, reason
                self._send_locked(self._ws.send(CloseConnection(code=code, reason=reason)))
        deadline = time.monotonic() + self.close_timeout
        while not self._closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # If the handler's thread is inside recv() it will see the peer's Close;
            # otherwise read it here.
            if self._read_lock.acquire(timeout=min(remaining, 0.05)):
                try:
                    self._drain_until_closed(deadline)
                finally:
                    self._read_lock.release()
        self._finish(self.close_code or CloseReason.ABNORMAL_CLOSURE, self.close_reason)

    def _drain_until_closed(self, deadline: float) -> None:
        while not self._closed.is_set():
            try:
                data = self._pending or self._read(deadline)
            except TimeoutError:
                return
            self._pending = b""
            self._messages.clear()  # messages after our Close are not delivered
            self._receive(data)

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(1000 if exc is None else CloseReason.INTERNAL_ERROR)


def wait_readable(sock: socket.socket, deadline: float) -> bool:
    """Wait until ``sock`` has data (or EOF) to read; False if ``deadline`` passed first."""
    pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes already
    if pending is not None and pending():
        return True
    remaining = max(0.0, deadline - time.monotonic())
    if not hasattr(select, "poll"):
        # eventlet's monkey patching removes select.poll (gevent's swaps in its own);
        # the patched select() waits on the hub, with no FD_SETSIZE limit. But eventlet
        # refuses a second waiter on a socket the handler's green thread is reading, so
        # the timers' "anything there now?" is a peek that never waits.
        if remaining > 0:
            return bool(select.select([sock], [], [], remaining)[0])
        probe = _socket.socket(fileno=sock.fileno())  # the bare, never-green socket
        try:
            probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return True  # data, or b"" at EOF
        except BlockingIOError:
            return False
        except OSError:
            return True  # a pending error: the next recv reports it
        finally:
            probe.detach()
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(remaining * 1000))


def _shutdown(sock: socket.socket) -> None:
    # Shut down rather than close: the thread that owns the socket closes it, so a
    # concurrent recv() wakes up instead of racing a reused file descriptor.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
