"""The threaded shell: sockets in, the core's decisions out, one thread per connection.

:func:`handle_socket` serves one already accepted connection from start to end, so any
accept loop (``socketserver``, your own) can hand a socket over; :func:`handle_request`
does the same for a server that has already read the request head (``http.server``).
:class:`WebSocketServer` is a ready accept loop around it with a connection cap, a
listen backlog sized for bursts, and a shutdown that closes connections with 1001.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, MutableSet
from types import TracebackType

from . import audit
from .app import WebSocketApp
from .connection import WebSocket, wait_readable
from .errors import (
    BadRequest,
    ConfigurationError,
    HandshakeError,
    RequestTimeout,
    ServiceUnavailable,
)
from .handshake import Accept, Rejected, ServerHandshake
from .http11 import request_head
from .request import Address, UpgradeRequest
from .sources import CookieToken, QueryToken

logger = logging.getLogger("wsauth_sync")

_READ_SIZE = 16 * 1024
# After a refusal: how long and how much to drain so the client reads the response
# instead of a reset (closing with unread input makes the kernel send RST).
_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 256 * 1024


def handle_socket(sock: socket.socket, address: Address | None, app: WebSocketApp, *,
                  ssl_context: ssl.SSLContext | None = None,
                  open_connections: MutableSet[WebSocket] | None = None,
                  on_decided: Callable[[], None] | None = None) -> None:
    """Serve one accepted connection: handshake, authentication, then the handler.

    Blocks until the connection ends and always closes ``sock``. Never raises for
    anything the client does; each refusal is answered, logged and closed.

    Args:
        sock: a connected, blocking socket, nothing read from it yet.
        address: the peer address, for logs.
        app: routes, policy and limits.
        ssl_context: serve TLS (wss://); the TLS handshake counts against the
            handshake deadline.
        open_connections: if given, the WebSocket is in it while the handler runs
            (the server uses this to close everything on shutdown).
        on_decided: called once the handshake is decided (or has failed), so the
            caller can count pending handshakes.
    """
    deadline = time.monotonic() + app.handshake_timeout
    try:
        if ssl_context is not None:
            sock = _tls_handshake(sock, ssl_context, deadline, address)
        handshake = ServerHandshake(app.policy, limits=app.head_limits, client=address)
        decision = _read_decision(sock, handshake, deadline)
        if on_decided is not None:
            on_decided()
            on_decided = None
        _conclude(sock, handshake, decision, app, deadline=deadline, address=address,
                  open_connections=open_connections)
    except OSError:
        pass  # the peer vanished mid-write, or the TLS handshake failed (logged)
    finally:
        if on_decided is not None:
            on_decided()
        sock.close()


def _tls_handshake(sock: socket.socket, context: ssl.SSLContext, deadline: float,
                   address: Address | None) -> ssl.SSLSocket:
    """Wrap ``sock`` in TLS within the handshake deadline; log and re-raise a failure."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        tls = context.wrap_socket(sock, server_side=True)
    except TimeoutError:
        audit.log_dropped(client=address, reason="tls_timeout")
        raise
    except OSError:  # ssl.SSLError included: a plaintext client, a bad ClientHello...
        audit.log_dropped(client=address, reason="tls_handshake_failed")
        sock.close()
        raise
    tls.settimeout(None)
    return tls


def handle_request(sock: socket.socket, request: UpgradeRequest, app: WebSocketApp, *,
                   buffered: bytes = b"") -> None:
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
        decision = decide_parsed(handshake, request)
        _conclude(sock, handshake, decision, app, deadline=deadline, address=request.client,
                  buffered=buffered)
    except OSError:
        pass


def decide_parsed(handshake: ServerHandshake, request: UpgradeRequest) -> Accept | Rejected:
    """Run a request parsed elsewhere through ``handshake`` as if read from the wire."""
    try:
        head = request_head(request)
    except HandshakeError as error:
        return handshake.reject(error)
    decision = handshake.receive_data(head)  # a whole head: always a decision
    return decision if decision is not None else handshake.reject(
        BadRequest("incomplete_request"))


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


def _conclude(sock: socket.socket, handshake: ServerHandshake, decision: Accept | Rejected,
              app: WebSocketApp, *, deadline: float, address: Address | None,
              buffered: bytes = b"",
              open_connections: MutableSet[WebSocket] | None = None) -> None:
    """Answer a decision on ``sock``: refuse and close, or accept and run the handler."""
    if isinstance(decision, Accept) and time.monotonic() > deadline:
        decision = handshake.reject(ServiceUnavailable("verifier_timeout"))
    if isinstance(decision, Rejected):
        audit.log_rejected(client=address, error=decision.error, request=decision.request)
        _send_and_close(sock, decision.response)
        return
    serve_accepted(sock, decision, app, response=handshake.accept(decision),
                   trailing_data=handshake.trailing_data + buffered, address=address,
                   open_connections=open_connections)


def serve_accepted(sock: socket.socket, accept: Accept, app: WebSocketApp, *, response: bytes,
                   trailing_data: bytes = b"", address: Address | None = None,
                   open_connections: MutableSet[WebSocket] | None = None) -> None:
    """Send the 101, then run the route's handler on a :class:`WebSocket` until it ends.

    Every shell ends here after an :class:`Accept`; the socket is shut down, not closed.
    """
    sock.sendall(response)
    audit.log_accepted(client=address, request=accept.request, identity=accept.identity,
                       subprotocol=accept.subprotocol)
    ws = app.connection(sock, accept, trailing_data=trailing_data)
    _run_handler(app, ws, address, open_connections)


def reject_socket(sock: socket.socket, address: Address | None, app: WebSocketApp,
                  error: ServiceUnavailable) -> None:
    """Answer a connection with ``error`` without reading its request, then close.

    Used at capacity: no verifier work is spent, and the drain after the response
    keeps the unread request from turning the close into a reset.
    """
    try:
        rejected = ServerHandshake(app.policy, client=address).reject(error)
        audit.log_rejected(client=address, error=rejected.error, request=None)
        _send_and_close(sock, rejected.response)
    except OSError:
        pass
    finally:
        sock.close()


def _read_decision(sock: socket.socket, handshake: ServerHandshake,
                   deadline: float) -> Accept | Rejected:
    # One absolute deadline for the whole head: a client dribbling a byte a second is
    # cut off on time, which per-recv timeouts would never do.
    while True:
        if not wait_readable(sock, deadline):
            return handshake.reject(RequestTimeout("handshake_timeout"))
        decision = handshake.receive_data(sock.recv(_READ_SIZE))
        if decision is not None:
            return decision


def _send_and_close(sock: socket.socket, response: bytes) -> None:
    """Send a refusal and end the connection so the client can read all of it."""
    sock.sendall(response)
    sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + _DRAIN_SECONDS
    drained = 0
    while drained < _DRAIN_BYTES and wait_readable(sock, deadline):
        data = sock.recv(_READ_SIZE)
        if not data:
            break
        drained += len(data)


def _run_handler(app: WebSocketApp, ws: WebSocket, address: Address | None,
                 open_connections: MutableSet[WebSocket] | None) -> None:
    handler = app.routes[ws.request.path]
    started = time.monotonic()
    if open_connections is not None:
        open_connections.add(ws)
    try:
        handler(ws)
    except Exception:  # a handler bug must not take the server down
        logger.exception("handler failed peer=%s subject=%s", audit.peer(address),
                         ws.identity.subject)
        ws.close(1011)
    else:
        ws.close(1000)
    finally:
        if open_connections is not None:
            open_connections.discard(ws)
        audit.log_closed(client=address, identity=ws.identity, code=ws.close_code or 1006,
                         duration=time.monotonic() - started)


class WebSocketServer:
    """A threaded WebSocket server: one thread per connection, under caps.

    The listening socket is bound in the constructor, so ``port=0`` resolves at once
    (see :attr:`address`). Use :meth:`serve_forever` in the current thread, or
    :meth:`start` / the context manager for a background thread.

    Args:
        app: routes, policy and limits.
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one.
        max_connections: connections served at once, pending handshakes included;
            beyond it handshakes get 503.
        max_pending: handshakes in progress at once (slow or idle clients); 503 beyond.
        max_pending_per_ip: handshakes in progress from one client address; 503
            beyond. Behind a reverse proxy every client shares its address: raise it.
        backlog: listen queue length; large enough that bursts are not refused.
        ssl_context: serve ``wss://``; see :func:`handle_socket`.
    """

    #: Extra threads allowed to answer 503 at capacity; past that, sockets are dropped.
    overflow_threads = 16

    def __init__(self, app: WebSocketApp, *, host: str = "127.0.0.1", port: int = 8080,
                 max_connections: int = 256, max_pending: int = 128,
                 max_pending_per_ip: int = 16, backlog: int = 128,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if min(max_connections, max_pending, max_pending_per_ip) < 1:
            raise ConfigurationError("connection and pending limits must be positive")
        self.app = app
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.ssl_context = ssl_context
        self._listener = socket.create_server((host, port), backlog=backlog)
        _warn_if_exposed(app, host, tls=ssl_context is not None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._overflow: set[threading.Thread] = set()
        self._pending: Counter[str] = Counter()
        self._open: set[WebSocket] = set()
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None

    @property
    def address(self) -> Address:
        """The ``(host, port)`` the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` is called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._listener:
                        self._accept()

    def _accept(self) -> None:
        try:
            sock, address = self._listener.accept()
        except OSError:
            return  # the client gave up before we got to it
        address = address[:2]
        ip = address[0]
        with self._lock:
            refusal = self._refusal(ip)
            pool = self._overflow if refusal else self._threads
            if refusal and (len(pool) >= self.overflow_threads or self.ssl_context):
                sock.close()  # no thread to spare (or no plaintext answer on TLS)
                audit.log_dropped(client=address, reason=refusal)
                return
            if refusal:
                work = functools.partial(reject_socket, sock, address, self.app,
                                         ServiceUnavailable(refusal, retry_after=1))
            else:
                self._pending[ip] += 1
                work = functools.partial(
                    handle_socket, sock, address, self.app, ssl_context=self.ssl_context,
                    open_connections=self._open,
                    on_decided=functools.partial(self._decided, ip))
            thread = threading.Thread(target=self._run, args=(pool, work), daemon=True)
            pool.add(thread)
        thread.start()

    def _refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` cannot be served now, or None."""
        if len(self._threads) >= self.max_connections:
            return "server_full"
        if self._pending.total() >= self.max_pending:
            return "too_many_pending"
        if self._pending[ip] >= self.max_pending_per_ip:
            return "too_many_pending_from_ip"
        return None

    def _decided(self, ip: str) -> None:
        with self._lock:
            self._pending[ip] -= 1
            if self._pending[ip] <= 0:
                del self._pending[ip]

    def _run(self, pool: set[threading.Thread], work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._lock:
                pool.discard(threading.current_thread())

    def start(self) -> WebSocketServer:
        """Run :meth:`serve_forever` in a background thread; returns ``self``."""
        self._accept_thread = threading.Thread(target=self.serve_forever, daemon=True,
                                               name="wsauth-accept")
        self._accept_thread.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting, close open connections with 1001, and wait for them.

        Returns within about ``close_timeout`` plus a second, whatever the clients do.
        """
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        self._listener.close()
        closers = [threading.Thread(target=ws.close, args=(1001, "server shutting down"),
                                    daemon=True) for ws in list(self._open)]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + self.app.close_timeout + 1.0
        with self._lock:
            threads = list(self._threads | self._overflow)
        for thread in threads + closers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> WebSocketServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


def _warn_if_exposed(app: WebSocketApp, host: str, *, tls: bool) -> None:
    """Warn when URL or cookie tokens would cross a network in clear text."""
    message = exposure_warning(app, host, tls=tls)
    if message is not None:
        logger.warning("%s", message)


def exposure_warning(app: WebSocketApp, host: str, *, tls: bool) -> str | None:
    """The warning for serving query or cookie tokens without TLS off loopback, if due."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    exposed = sorted({source.name for source in app.policy.sources
                      if isinstance(source, QueryToken | CookieToken)})
    if tls or loopback or not exposed:
        return None
    return (f"listening on {host} without TLS with {'/'.join(exposed)} tokens: they travel "
            "in clear text; use ssl_context (wss://) or a TLS-terminating proxy")


def serve(app: WebSocketApp, *, host: str = "127.0.0.1", port: int = 8080,
          max_connections: int = 256, ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve ``app`` in the current thread until interrupted (Ctrl-C)."""
    server = WebSocketServer(app, host=host, port=port, max_connections=max_connections,
                             ssl_context=ssl_context)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
