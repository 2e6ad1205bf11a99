"""A blocking WebSocket over a socket, driven by wsproto, for one handler thread.

The handler's own thread does all the reading: :meth:`WebSocket.recv` reads the socket,
feeds wsproto and answers pings on the way, so a connection costs one thread, not two.
Not reading is backpressure: bytes stay in the kernel and the client's sends slow down.
wsproto checks the framing rules (masking, reserved bits, control frames, UTF-8); it has
no message size limit, so this module counts bytes across fragments and closes with
1009 past ``max_message_size`` (RFC 6455 §10.4).

Writes go through an :class:`~wsauth_sync.transport.Outbox`: a send waits for a peer
that reads slowly, but one that takes nothing for ``send_timeout`` fails the connection;
the shared timer thread never waits on a connection at all.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from .core import audit
from .core.errors import ConnectionClosed, HandshakeError
from .core.handshake import Accept
from .core.readable import public_reason
from .core.request import UpgradeRequest
from .core.verifiers import Identity
from .keepalive import Keepalive
from .limits import DEFAULT_LIMITS, ConnectionLimits
from .messages import Data, MessageAssembler, MessageTooBig
from .timers import TIMERS
from .transport import Outbox, open_transport
from .transport import wait_readable as wait_readable  # for the handshake's reads

# recv() allocates its whole buffer while it waits, so a waiting read asks for little; a
# read that fills it means data is flowing, and what else has arrived is taken at once
# (sized by the kernel's count), so a large frame reaches wsproto whole, not in pieces.
_MIN_READ = 1024
_MAX_READ = 256 * 1024
# Close reasons sent by the library are fixed, short and secret-free (RFC 6455 §5.5).
_MAX_REASON_BYTES = 123
# A Close the timer could not write at once (the peer does not read, or a send holds the
# writing turn) gets this long before TCP is dropped instead.
_CLOSE_WRITE_GRACE = 0.5
# When the handler is not reading, the keepalive reads for it to find the Pong, keeping
# at most this much of undelivered messages (more means the handler is behind).
_HELD_FOR_HANDLER = 64 * 1024
_KEEPALIVE_READS = 4

#: Checks a fresh credential for an open connection: ``(token, current identity)`` in,
#: the new identity out, or a HandshakeError (see ``HandshakePolicy.reverify``).
Reverify = Callable[[str, Identity], Identity]


class WebSocket:
    """An accepted WebSocket, handed to the handler with the authenticated identity.

    Args:
        sock: the connected socket, right after the 101 response was sent.
        accept: the core's decision: identity, subprotocol, redacted request.
        trailing_data: bytes that arrived with the request head (eager frames).
        limits: sizes and timeouts (:class:`~wsauth_sync.limits.ConnectionLimits`);
            its ``close_on_expiry`` is the caller's to apply through ``expires_at``.
        expires_at: Unix time at which the credential expires: the connection is
            closed with 1008 then (see :attr:`Identity.expires_at`), unless the limits'
            ``close_on_expiry`` is False.
        reverify: checks the credentials given to :meth:`reauthenticate` (the app's
            verifier and rules); None: re-authentication is refused.
        **options: fields of ``ConnectionLimits`` as keywords (the form of 0.1).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        accept: Accept,
        trailing_data: bytes = b"",
        limits: ConnectionLimits = DEFAULT_LIMITS,
        expires_at: float | None = None,
        reverify: Reverify | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - {field.name for field in dataclasses.fields(limits)}
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        limits = ConnectionLimits.from_options(limits, options)
        max_message_size, max_fragments = limits.max_message_size, limits.max_fragments
        ping_interval, ping_timeout = limits.ping_interval, limits.ping_timeout
        close_on_expiry = limits.close_on_expiry
        self._io = open_transport(sock)
        self._out = Outbox(self._io)
        self._accept = accept
        self.limits = limits
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.close_timeout = limits.close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_timeout = limits.send_timeout
        self._idle_timeout = limits.idle_timeout
        now = time.monotonic()
        self._keepalive = (
            None
            if ping_interval is None
            else Keepalive(interval=ping_interval, timeout=ping_timeout, now=now)
        )
        self._last_message = now  # a whole message: it is not idle
        self._hard_close: float | None = None
        self._close_started = now
        self._close_ticket: int | None = None
        # Expiry as a monotonic deadline, so clock changes cannot move it.
        self._valid_until = None if expires_at is None else now + (expires_at - time.time())
        self._close_on_expiry = close_on_expiry
        self._expires = self._valid_until if close_on_expiry else None
        self._reverify = reverify
        self._reauth_lock = threading.Lock()  # one re-authentication at a time
        self._ws = Connection(ConnectionType.SERVER)
        # wsproto's state and the order frames are queued in. Held for in-memory work
        # only, never across I/O or a wait, so the timer thread may always take it.
        self._state_lock = threading.Lock()
        self._read_lock = threading.Lock()  # one reader at a time
        self._closed = threading.Event()
        self._messages: deque[Data] = deque()
        self._held = 0  # bytes (str: characters) of messages not yet delivered
        self._assembler = MessageAssembler(max_size=max_message_size, max_fragments=max_fragments)
        self._end: tuple[int, str] | None = None  # set while reading: finish after writing
        self._backlog = False  # wsproto may hold frames past the last message delivered
        self.close_code: int | None = None
        self.close_reason = ""
        self._pending = trailing_data
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
    def expires_in(self) -> float | None:
        """Seconds until the credential in force expires (negative once past), or None
        when it does not expire. Poll it (``recv(timeout=...)``) to ask the client for a
        fresh token in time for :meth:`reauthenticate`."""
        until = self._valid_until
        return None if until is None else until - time.monotonic()

    def reauthenticate(self, token: str) -> Identity:
        """Replace the connection's credential with ``token`` without reconnecting.

        The app's verifier (and time limit) checks it as in a handshake; it must name
        the same subject (and credential id) and hold the path's required scopes. On
        success :attr:`identity` is the new one and the expiry deadline moves to the new
        credential's; an ``reauthenticated`` audit line is written. Blocks while the
        verifier runs. Never logs the token.

        Raises:
            ConnectionClosed: the credential was refused (invalid, expired, another
                subject, verifier error): the connection is closed with 1008 and a fixed
                reason, after a ``reauthentication_failed`` line; or it was closed already.
        """
        with self._reauth_lock:
            if self._closed.is_set() or self.close_code is not None:
                raise ConnectionClosed(self.close_code or 1006, self.close_reason)
            current = self.identity
            try:
                if self._reverify is None:
                    raise HandshakeError("reauthentication_unsupported")
                identity = self._reverify(token, current)
            except HandshakeError as error:
                self._refuse_reauthentication(current, error)
                raise ConnectionClosed(self.close_code or 1008, self.close_reason) from None
            if self._closed.is_set() or self.close_code is not None:
                # Expired or revoked while the verifier ran: that close stands.
                raise ConnectionClosed(self.close_code or 1006, self.close_reason)
            self._accept = replace(self._accept, identity=identity)
            self._move_expiry(identity.expires_at)
        audit.log_reauthenticated(
            client=self.request.client, identity=identity, path=self.request.path
        )
        return identity

    def _refuse_reauthentication(self, current: Identity, error: HandshakeError) -> None:
        audit.log_reauthentication_failed(
            client=self.request.client, subject=current.subject, path=self.request.path, error=error
        )
        # A fixed word for the client, as in a readable refusal: never the log reason.
        word = (
            "unavailable"
            if error.status >= 500
            else "forbidden"
            if error.status == 403
            else "too many attempts"
            if error.status == 429
            else public_reason(error.reason)
        )
        self.close(1008, f"reauthentication failed: {word}")

    def _move_expiry(self, expires_at: float | None) -> None:
        now = time.monotonic()
        self._valid_until = None if expires_at is None else now + (expires_at - time.time())
        self._expires = self._valid_until if self._close_on_expiry else None
        # A later deadline: the pending timer call finds nothing due and re-files itself.
        due = self._next_due(now)
        if due is not None:
            TIMERS.schedule(self, due)

    @property
    def idle_timeout(self) -> float | None:
        """Seconds without a message from the peer before closing with 1001 (None: never)."""
        return self._idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, value: float | None) -> None:
        self._last_message = time.monotonic()  # idle from now on, not from the last message
        self._idle_timeout = value

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
                if self._backlog:
                    data, more = None, b""
                elif self._pending:
                    data, more, self._pending = self._pending, b"", b""
                else:
                    data, more = self._read(deadline)
                self._receive(data, more)
                self._after_receive(wait=True)
            message = self._messages.popleft()
            self._held -= len(message)
            return message

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def _read(self, deadline: float | None) -> tuple[bytes, bytes]:
        """Wait for data; then what else has arrived, if the first read was full."""
        data = self._io.read(_MIN_READ, deadline)
        if len(data) < _MIN_READ:
            return data, b""
        return data, self._io.read_arrived(_MAX_READ - _MIN_READ)

    def _receive(self, data: bytes | None, more: bytes = b"") -> None:
        """Feed wsproto (None: nothing new) and act on its events up to the end of the
        next whole message; frames to send are only queued here.

        Stopping after a message delivers before failing: when a valid message and a
        malformed frame arrive in one read, the handler gets the message and its answer
        goes out before the bad frame fails the connection (RFC 6455 §7.1.7 fails the
        connection at the frame, not at the read that carried it).
        """
        with self._state_lock:
            if data is not None:
                self._ws.receive_data(data or None)  # None tells wsproto the stream ended
                if more:  # fed apart: wsproto's buffer joins them, no copy of ours
                    self._ws.receive_data(more)
            queued = len(self._messages)
            self._backlog = False
            for event in self._ws.events():
                # By exact type: wsproto's events are final classes, and isinstance()
                # against its abstract Event base costs more than the rest per message.
                _HANDLERS[type(event)](self, event)
                if self._end is not None:
                    return
                if len(self._messages) > queued:
                    self._backlog = True  # wsproto may hold more: parsed on the next call
                    return

    def _on_ping(self, event: Ping) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._out.put_pong(self._ws.send(event.response()))

    def _on_pong(self, event: Pong) -> None:
        alive = self._keepalive
        if alive is not None and alive.pong(bytes(event.payload), time.monotonic()):
            TIMERS.schedule(self, alive.next_due())

    def _after_receive(self, *, wait: bool) -> None:
        """Write what reading queued (a Pong, a Close), then end the connection if due.

        The reader never waits for another thread's send to finish before reading on
        (two peers each waiting for the other to read would wait for ever); only the
        Close that ends the connection is worth that wait, bounded as any send.
        """
        if not wait:
            self._flush_nowait()
        elif self._end is not None:
            self._flush(
                self._out.tickets, min(self.send_timeout, self.close_timeout), self.close_timeout
            )
        elif not self._out.pong_waiting:
            return  # the usual case: nothing was queued by reading
        else:
            try:
                if self._out.flush_pong(no_progress=self.send_timeout):
                    return
                reason = "send timeout"
            except OSError:
                reason = ""
            self._finish(CloseReason.ABNORMAL_CLOSURE, reason)
        if self._end is not None:
            self._finish(*self._end)

    def _on_message(self, event: Message[Any]) -> None:
        try:
            message = self._assembler.add(event)
        except MessageTooBig:
            self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
            return
        if message is not None:
            if self._idle_timeout is not None:  # the clock only matters to the idle check
                self._last_message = time.monotonic()
            self._messages.append(message)
            self._held += len(message)

    def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer with the same code.
            self._out.put(self._ws.send(event.response()))
            self._end = (event.code, event.reason or "")
        elif state is ConnectionState.CLOSED:
            # Either the answer to our Close, or wsproto reporting the stream ended.
            self._end = (self.close_code or event.code, event.reason or "")
        else:
            # wsproto found a protocol error (1002) or invalid UTF-8 (1007): fail the
            # connection (RFC 6455 §7.1.7); the reason stays generic.
            self._fail(event.code, "")

    def _fail(self, code: int, reason: str) -> None:
        """With the state lock: queue a Close for a local failure, then drop TCP."""
        if self._ws.state is ConnectionState.OPEN:
            self._out.put(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._end = (code, reason)

    def _finish(self, code: int, reason: str) -> None:
        """End the connection and let go of every buffer (never with the state lock)."""
        with self._state_lock:
            if self.close_code is None:
                self.close_code, self.close_reason = int(code), reason
            self._closed.set()
            self._assembler.clear()
            self._pending = b""
            self._out.clear()
        self._io.shutdown()

    # -- sending -------------------------------------------------------------------

    def send(self, message: Data) -> None:
        """Send one message: ``str`` as text, ``bytes`` as binary. Thread-safe.

        Waits while the peer reads slowly; if it takes no data for ``send_timeout``
        seconds, TCP is dropped and this raises ``ConnectionClosed`` (1006).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if isinstance(message, str):
            event: TextMessage | BytesMessage = TextMessage(data=message)
        else:
            event = BytesMessage(data=bytes(message))
        self._send_event(event)

    def ping(self, payload: bytes = b"") -> None:
        """Send a Ping; the peer's Pong is absorbed by :meth:`recv`. Thread-safe."""
        self._send_event(Ping(payload=payload))

    def _send_event(self, event: Event) -> None:
        out = self._out
        # Usually no one else is writing: then the sender takes the writing turn first and,
        # if nothing is queued when its frame is made, writes the frame without queueing it.
        claimed = out.claim()
        try:
            with self._state_lock:
                if self._ws.state is not ConnectionState.OPEN or self._closed.is_set():
                    raise ConnectionClosed(self.close_code or 1006, self.close_reason)
                frame = self._ws.send(event)
                # Frames made before this one go first: behind them, through the queue.
                ticket = 0 if claimed and out.idle else out.put(frame)
        except BaseException:
            if claimed:
                out.release()
            raise
        if ticket:
            if claimed:
                out.release()
            if self._flush(ticket, self.send_timeout) and out.written(ticket):
                return
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        try:
            if out.write_claimed(frame, no_progress=self.send_timeout):
                return
            reason = "send timeout"
        except OSError:
            reason = ""
        self._finish(CloseReason.ABNORMAL_CLOSURE, reason)
        raise ConnectionClosed(self.close_code or 1006, self.close_reason)

    def _flush(self, ticket: int, no_progress: float, turn_timeout: float = -1) -> bool:
        """Write up to ``ticket``; on failure or no progress, drop TCP (1006)."""
        try:
            if self._out.flush(ticket, no_progress=no_progress, turn_timeout=turn_timeout):
                return True
            reason = "send timeout"
        except OSError:
            reason = ""
        self._finish(CloseReason.ABNORMAL_CLOSURE, reason)
        return False

    def _flush_nowait(self) -> None:
        try:
            self._out.flush_nowait()
        except OSError:
            self._finish(CloseReason.ABNORMAL_CLOSURE, "")

    # -- timers (run on the shared timer thread; nothing here waits) ---------------

    def _next_due(self, now: float) -> float | None:
        if self._closed.is_set():
            return None
        candidates = [self._hard_close, self._expires]
        if self.idle_timeout is not None:
            candidates.append(self._last_message + self.idle_timeout)
        if self._keepalive is not None:
            candidates.append(self._keepalive.next_due())
        due = [value for value in candidates if value is not None]
        return max(now, min(due)) if due else None

    def on_timer(self, now: float) -> float | None:
        """Keepalive, idle and expiry checks; called by the shared timer thread."""
        if self._closed.is_set():
            return None
        if self._hard_close is not None:
            if now >= self._hard_close and not self._close_written_by(now):
                self._finish(self.close_code or CloseReason.ABNORMAL_CLOSURE, self.close_reason)
                return None
        elif self._expires is not None and now >= self._expires:
            self._start_close(CloseReason.POLICY_VIOLATION, "credential expired", now)
        elif self.idle_timeout is not None and now >= self._last_message + self.idle_timeout:
            self._start_close(CloseReason.GOING_AWAY, "idle timeout", now)
        elif self._keepalive is not None:
            self._check_keepalive(self._keepalive, now)
        return self._next_due(now)

    def _check_keepalive(self, alive: Keepalive, now: float) -> None:
        if not alive.waiting:
            payload = alive.ping(now)
            if payload is not None:
                with self._state_lock:
                    if self._ws.state is ConnectionState.OPEN:
                        self._out.put(self._ws.send(Ping(payload=payload)))
                self._flush_nowait()
        elif self._read_for_handler(alive):  # the Pong may wait unread: look for it
            alive.excuse(now)
        elif alive.timed_out(now):
            self._fail_nowait(CloseReason.INTERNAL_ERROR, "keepalive ping timeout")

    def _read_for_handler(self, alive: Keepalive) -> bool:
        """Read what has arrived if the handler is not reading; True if it is behind."""
        if not self._read_lock.acquire(blocking=False):
            return False  # the handler is in recv(): it reads any Pong itself
        try:
            for _ in range(_KEEPALIVE_READS):
                # What wsproto already holds first: messages for the handler, or the Pong.
                while self._backlog and self._held < _HELD_FOR_HANDLER:
                    self._receive(None)
                    self._after_receive(wait=False)
                if self._held >= _HELD_FOR_HANDLER:
                    return True
                data = self._pending or self._io.read_nowait(_MAX_READ)
                self._pending = b""
                if data is None or self._closed.is_set():
                    return False
                self._receive(data)
                self._after_receive(wait=False)
                if not alive.waiting or not data:
                    return False
            return True  # still more to read than the keepalive reads for a handler
        finally:
            self._read_lock.release()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Start the closing handshake from any thread without waiting for it.

        A handler reading the connection sees the peer's answer as
        :class:`ConnectionClosed`; TCP is dropped after ``close_timeout`` regardless,
        or at once if the Close cannot be written (the peer does not read).
        """
        now = time.monotonic()
        if self._hard_close is None:
            self._start_close(code, reason, now)
            TIMERS.schedule(self, self._hard_close or now)

    def _start_close(self, code: int, reason: str, now: float) -> None:
        """Queue our Close and write it if the socket takes it now; never waits."""
        with self._state_lock:
            if self._ws.state is ConnectionState.OPEN and not self._closed.is_set():
                self.close_code, self.close_reason = code, reason
                self._close_ticket = self._out.put(
                    self._ws.send(CloseConnection(code=code, reason=reason))
                )
        self._flush_nowait()
        self._close_started = now
        if self._close_ticket is None:  # closing already (the handler, or the peer)
            self._hard_close = now + self.close_timeout
        else:
            self._hard_close = now + min(self.close_timeout, _CLOSE_WRITE_GRACE)
            self._close_written_by(now)

    def _close_written_by(self, now: float) -> bool:
        """Once our Close is out, give the peer ``close_timeout`` to answer it."""
        if self._close_ticket is None:
            return now < self._close_started + self.close_timeout
        if not self._out.written(self._close_ticket):
            self._flush_nowait()  # a last try: the peer may have read meanwhile
        if self._out.written(self._close_ticket) and not self._closed.is_set():
            self._hard_close = self._close_started + self.close_timeout
            return now < self._hard_close
        return False

    def _fail_nowait(self, code: int, reason: str) -> None:
        # A peer that stopped answering may also have stopped reading: never wait here.
        with self._state_lock:
            self._fail(code, reason)
        self._flush_nowait()
        self._finish(code, reason)

    # -- closing -------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake, then end the TCP connection. Thread-safe.

        Waits up to ``close_timeout`` for the peer's Close. Safe to call more than once.
        """
        if len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
            raise ValueError("close reason is limited to 123 bytes of UTF-8")
        ticket = None
        with self._state_lock:
            if self._ws.state is ConnectionState.OPEN and not self._closed.is_set():
                self.close_code, self.close_reason = code, reason
                ticket = self._out.put(self._ws.send(CloseConnection(code=code, reason=reason)))
        if ticket is not None:
            self._flush(ticket, min(self.send_timeout, self.close_timeout), self.close_timeout)
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
        self._messages.clear()  # nobody reads after close(): let go of them
        self._held = 0

    def _drain_until_closed(self, deadline: float) -> None:
        while not self._closed.is_set():
            try:
                if self._backlog:
                    data, more = None, b""
                else:
                    data, more = (self._pending, b"") if self._pending else self._read(deadline)
            except TimeoutError:
                return
            self._pending = b""
            self._messages.clear()  # messages after our Close are not delivered
            self._held = 0
            self._receive(data, more)
            self._after_receive(wait=True)

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(1000 if exc is None else CloseReason.INTERNAL_ERROR)


_HANDLERS: dict[type[Event], Callable[[WebSocket, Any], None]] = {
    TextMessage: WebSocket._on_message,
    BytesMessage: WebSocket._on_message,
    Ping: WebSocket._on_ping,
    Pong: WebSocket._on_pong,
    CloseConnection: WebSocket._on_close,
}
