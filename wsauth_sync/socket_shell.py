"""Serving one connection, from an accepted socket to its close: the socket shell.

:func:`handle_socket` takes a socket nothing has been read from: it reads the head under
one absolute deadline (TLS included), asks the core, answers, and runs the handler.
:func:`handle_request` does the same for a socket whose head another server has parsed
(``http.server``); the WSGI middleware uses :func:`decide` and
:func:`serve_accepted` the same way. Whatever the entry, a refusal is written by the
same :class:`~wsauth_sync.core.handshake.ServerHandshake`, so the bytes are identical.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import time
from collections.abc import Callable, MutableSet
from typing import Literal

from .config import WebSocketApp
from .connection import WebSocket, wait_readable
from .core import audit
from .core.errors import (
    ConnectionClosed,
    RequestTimeout,
    ServiceUnavailable,
)
from .core.handshake import Accept, ClosedRefusal, Decision, Rejected, ServerHandshake
from .core.http11 import HEAD_READ_SIZE as _READ_SIZE
from .core.request import UNIX_PEER, Address, UpgradeRequest
from .pages import Served, serve_page

logger = logging.getLogger("wsauth_sync")


# After a refusal: how long and how much to drain so the client reads the response
# instead of a reset (closing with unread input makes the kernel send RST).
_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 256 * 1024


def handle_socket(
    sock: socket.socket,
    address: Address | None,
    app: WebSocketApp,
    *,
    ssl_context: ssl.SSLContext | None = None,
    open_connections: MutableSet[WebSocket] | None = None,
    on_decided: Callable[[], None] | None = None,
) -> None:
    """Serve one accepted connection: handshake, authentication, then the handler.

    Blocks until the connection ends and always closes ``sock``. Never raises for
    anything the client does; each refusal is answered, logged and closed.

    Args:
        sock: a connected, blocking socket, nothing read from it yet.
        address: the peer address, for logs and the failed-authentication limiter;
            None when unknown (a Unix-socket peer is recognized as such).
        app: routes, policy and limits.
        ssl_context: serve TLS (wss://); the TLS handshake counts against the
            handshake deadline.
        open_connections: if given, the WebSocket is in it while the handler runs
            (the server uses this to close everything on shutdown).
        on_decided: called once the handshake is decided (or has failed), so the
            caller can count pending handshakes.
    """
    deadline = time.monotonic() + app.handshake_timeout
    if not address and sock.family == socket.AF_UNIX:
        address = UNIX_PEER  # no address; trusted_proxies=["unix"] may trust it
    try:
        if ssl_context is not None:
            sock = _tls_handshake(sock, ssl_context, deadline, address)
        handshake = ServerHandshake(app.policy, limits=app.head_limits, client=address)
        head = _read_head(sock, handshake, deadline)
        finish_handshake(
            sock,
            handshake,
            head,
            app,
            deadline=deadline,
            address=address,
            open_connections=open_connections,
            on_decided=on_decided,
        )
        on_decided = None
    except OSError:
        pass  # the peer vanished mid-write, or the TLS handshake failed (logged)
    finally:
        if on_decided is not None:
            on_decided()
        sock.close()


def finish_handshake(
    sock: socket.socket,
    handshake: ServerHandshake,
    head: Literal[True] | Rejected,
    app: WebSocketApp,
    *,
    deadline: float,
    address: Address | None,
    open_connections: MutableSet[WebSocket] | None = None,
    on_decided: Callable[[], None] | None = None,
) -> None:
    """Decide on a head already read into ``handshake``, answer, and run the handler.

    ``head`` is what :meth:`ServerHandshake.receive_head` returned: True for a whole
    head, or the refusal of a malformed or late one. Raises OSError if the peer goes.
    """
    decision = decide(handshake, app, deadline) if head is True else head
    trailing = handshake.trailing_data if isinstance(decision, Accept) else b""
    del handshake  # the parser is not needed while the WebSocket lives: free it
    if on_decided is not None:
        on_decided()
    _deliver(
        sock,
        decision,
        app,
        trailing_data=trailing,
        address=address,
        open_connections=open_connections,
    )


def _tls_handshake(
    sock: socket.socket, context: ssl.SSLContext, deadline: float, address: Address | None
) -> ssl.SSLSocket:
    """Wrap ``sock`` in TLS within the handshake deadline; log and re-raise a failure."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        tls = context.wrap_socket(sock, server_side=True)
    except (TimeoutError, socket.timeout):  # one class from 3.10; on 3.9 an OSError beside it
        audit.log_dropped(client=address, reason="tls_timeout")
        raise
    except OSError:  # ssl.SSLError included: a plaintext client, a bad ClientHello...
        audit.log_dropped(client=address, reason="tls_handshake_failed")
        sock.close()
        raise
    # The timeout stays: every read until the decision is bounded by the deadline
    # (see _recv_by); the connection resets it once the WebSocket is accepted.
    return tls


def handle_request(
    sock: socket.socket, request: UpgradeRequest, app: WebSocketApp, *, buffered: bytes = b""
) -> None:
    """Serve a connection whose request head another server has already read.

    For accept loops that parse HTTP themselves (``http.server``): the parsed head goes
    through the same core as :func:`handle_socket`, so the answers are identical. The
    caller keeps ownership of ``sock`` and must not write to it afterwards.

    Args:
        sock: the connection, positioned after the request head.
        request: the parsed head, e.g. from :meth:`UpgradeRequest.from_fields`.
        buffered: bytes the caller read past the head (an eager first frame).
    """
    deadline = time.monotonic() + app.handshake_timeout
    handshake = ServerHandshake(app.policy, limits=app.head_limits, client=request.client)
    try:
        head = handshake.receive_request(request)
        decision = decide(handshake, app, deadline) if head is True else head
        _deliver(sock, decision, app, trailing_data=buffered, address=request.client)
    except OSError:
        pass


def decide(handshake: ServerHandshake, app: WebSocketApp, deadline: float) -> Decision | Served:
    """What every shell answers to a whole head: a page, or the core's decision with the
    app's admission (its caps, and the deadline for a verifier that answered late); on
    the app's ``readable_refusals`` paths a browser's credential refusal becomes a
    :class:`ClosedRefusal`."""
    served = serve_page(handshake, app.pages)
    if served is not None:
        return served

    def admit(accept: Accept) -> None:
        if time.monotonic() > deadline:
            raise ServiceUnavailable("verifier_timeout")
        # Held until serve_accepted() ends, which releases it.
        app.caps.reserve(accept.identity.subject, app.client_address(accept.request))

    decision = handshake.decide(admit=admit)
    if isinstance(decision, Rejected) and app.readable_refusals:
        return handshake.close_refusal(decision, paths=app.readable_refusals) or decision
    return decision


def take_buffered(reader: object, sock: socket.socket) -> bytes:
    """Bytes a server's buffered reader holds past the request head (an eager frame).

    ``reader`` is the ``io.BufferedReader`` the host server parsed the head from
    (``rfile`` of an ``http.server`` handler, Werkzeug's ``wsgi.input``); anything else
    gives ``b""``. Never blocks.
    """
    if not isinstance(reader, io.BufferedReader):
        return b""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # peek() must return what is buffered, never wait for more
    try:
        pending = reader.peek()
    except (BlockingIOError, OSError, ValueError):
        pending = b""
    finally:
        sock.settimeout(timeout)
    return reader.read(len(pending)) if pending else b""


def _deliver(
    sock: socket.socket,
    decision: Decision | Served,
    app: WebSocketApp,
    *,
    trailing_data: bytes,
    address: Address | None,
    open_connections: MutableSet[WebSocket] | None = None,
) -> None:
    """Send the answer: refuse or serve a page and close, or accept and run the handler."""
    if isinstance(decision, ClosedRefusal):
        audit.log_rejected(
            client=address,
            error=decision.error,
            request=decision.request,
            delivered="close",
            code=decision.code,
        )
        send_close_refusal(sock, decision)
    elif isinstance(decision, Rejected):
        audit.log_rejected(client=address, error=decision.error, request=decision.request)
        _send_and_close(sock, decision.response)
    elif isinstance(decision, Served):
        audit.log_served(client=address, request=decision.request)
        _send_and_close(sock, decision.response)
    else:
        serve_accepted(
            sock,
            decision,
            app,
            trailing_data=trailing_data,
            address=address,
            open_connections=open_connections,
        )


def serve_accepted(
    sock: socket.socket,
    accept: Accept,
    app: WebSocketApp,
    *,
    trailing_data: bytes = b"",
    address: Address | None = None,
    open_connections: MutableSet[WebSocket] | None = None,
) -> None:
    """Send the 101, then run the route's handler on a :class:`WebSocket` until it ends.

    Every shell ends here after an :class:`Accept`; the socket is shut down, not closed.
    """
    try:
        sock.settimeout(None)  # the connection keeps its own deadlines from here on
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames
        sock.sendall(accept.response)
        audit.log_accepted(
            client=address,
            request=accept.request,
            identity=accept.identity,
            subprotocol=accept.subprotocol,
        )
        ws = app.connection(sock, accept, trailing_data=trailing_data)
        _run_handler(app, ws, address, open_connections)
    finally:
        app.caps.release(accept.identity.subject, app.client_address(accept.request))


def _read_head(
    sock: socket.socket, handshake: ServerHandshake, deadline: float
) -> Literal[True] | Rejected:
    # One absolute deadline for the whole head: a client dribbling a byte a second is
    # cut off on time, which per-recv timeouts would never do.
    # The head has usually arrived with the connection: try a non-blocking read first
    # and poll only when there is nothing yet (TLS sockets take no recv flags).
    eager = not isinstance(sock, ssl.SSLSocket)
    while True:
        data = _recv_nowait(sock) if eager else None
        if data is None:
            data = _recv_by(sock, deadline)
            if data is None:
                return handshake.reject(RequestTimeout("handshake_timeout"))
        head = handshake.receive_head(data)
        if head is not None:
            return head


def _recv_by(sock: socket.socket, deadline: float) -> bytes | None:
    """One read that returns by ``deadline``: the data, or None when it passed first."""
    if not wait_readable(sock, deadline):
        return None
    if not isinstance(sock, ssl.SSLSocket):
        return sock.recv(_READ_SIZE)  # readable: a plain recv returns at once
    # Readable is not enough on TLS: with part of a record in, SSL_read waits for the
    # rest, so a client could stall there past the deadline. Bound the read itself.
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        return sock.recv(_READ_SIZE)
    except (TimeoutError, socket.timeout):  # one class from 3.10; on 3.9 an OSError beside it
        return None


def _recv_nowait(sock: socket.socket) -> bytes | None:
    """What has already arrived, or None when nothing has (never blocks)."""
    try:
        return sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def _send_and_close(sock: socket.socket, response: bytes) -> None:
    """Send a refusal and end the connection so the client can read all of it.

    Every step is bounded: a client that stops reading, or stalls inside a TLS record,
    holds this thread for at most ``_DRAIN_SECONDS``.
    """
    deadline = time.monotonic() + _DRAIN_SECONDS
    sock.settimeout(_DRAIN_SECONDS)
    sock.sendall(response)
    sock.shutdown(socket.SHUT_WR)
    drained = 0
    while drained < _DRAIN_BYTES:
        data = _recv_by(sock, deadline)
        if not data:
            break
        drained += len(data)


def send_close_refusal(
    sock: socket.socket, refusal: ClosedRefusal, *, head_sent: bool = False
) -> None:
    """Write a readable refusal (101, then Close), wait for the client's Close, end TCP.

    What the client sends meanwhile is parsed only to find its Close and is dropped:
    no handler runs and no message is delivered. Bounded like :func:`_send_and_close`
    (``_DRAIN_SECONDS``, ``_DRAIN_BYTES``). Raises OSError if the peer is gone.

    Args:
        head_sent: the host already wrote the 101 (uWSGI): write only the Close.
    """
    deadline = time.monotonic() + _DRAIN_SECONDS
    sock.settimeout(_DRAIN_SECONDS)
    sock.sendall(refusal.frame if head_sent else refusal.response)
    watch = refusal.watch()
    drained = 0
    while drained < _DRAIN_BYTES:
        data = _recv_by(sock, deadline)
        if data is None or watch.receive_data(data):
            break
        drained += len(data)
    # The server ends TCP once the closing handshake is over (RFC 6455 §7.1.1); the
    # WSGI host closes its socket later, so the shutdown is what the client sees.
    sock.shutdown(socket.SHUT_RDWR)


def _run_handler(
    app: WebSocketApp,
    ws: WebSocket,
    address: Address | None,
    open_connections: MutableSet[WebSocket] | None,
) -> None:
    handler = app.routes[ws.request.path]
    started = time.monotonic()
    if open_connections is not None:
        open_connections.add(ws)
    if app.revocations is not None:
        app.revocations.add(ws)
    try:
        handler(ws)
    except ConnectionClosed:
        pass  # the peer went away while the handler was sending: not a handler bug
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - a handler bug (CancelledError too) must not
        # take the server down, nor leave its traceback on stderr instead of the log.
        audit.log_handler_failed(client=address, identity=ws.identity)
        ws.close(1011)
    else:
        ws.close(1000)
    finally:
        if open_connections is not None:
            open_connections.discard(ws)
        if app.revocations is not None:
            app.revocations.discard(ws)
        audit.log_closed(
            client=address,
            identity=ws.identity,
            code=ws.close_code or 1006,
            duration=time.monotonic() - started,
        )
