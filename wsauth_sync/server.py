"""The threaded server: an accept loop with caps, one thread per connection.

:class:`WebSocketServer` accepts connections and hands each to
:func:`~wsauth_sync.upgrade.handle_socket` on its own thread, under a cap on connections
and on handshakes in progress (total and per client address); beyond the caps it
answers 503 without reading the request. Shutdown closes open connections with 1001.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType

from . import audit
from .app import WebSocketApp
from .connection import WebSocket
from .errors import ConfigurationError, ServiceUnavailable
from .request import Address
from .sources import CookieToken, QueryToken
from .upgrade import handle_socket, reject_socket
from .workers import WorkerPool

logger = logging.getLogger("wsauth_sync")


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
        self._listener = _Listener(fileno=socket.create_server(
            (host, port), backlog=backlog).detach())
        _warn_if_exposed(app, host, tls=ssl_context is not None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._workers = WorkerPool()
        self._active = 0  # connections being served (handshake or WebSocket)
        self._refusing = 0  # connections being told 503
        self._pending: Counter[str] = Counter()  # handshakes in progress, by address
        self._pending_total = 0
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
            if refusal and (self._refusing >= self.overflow_threads or self.ssl_context):
                sock.close()  # no thread to spare (or no plaintext answer on TLS)
                audit.log_dropped(client=address, reason=refusal)
                return
            if refusal:
                self._refusing += 1
                work = functools.partial(reject_socket, sock, address, self.app,
                                         ServiceUnavailable(refusal, retry_after=1))
            else:
                self._active += 1
                self._pending[ip] += 1
                self._pending_total += 1
                work = functools.partial(
                    handle_socket, sock, address, self.app, ssl_context=self.ssl_context,
                    open_connections=self._open,
                    on_decided=functools.partial(self._decided, ip))
        self._workers.submit(functools.partial(self._run, work, refusal is not None))

    def _refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` cannot be served now, or None."""
        if self._active >= self.max_connections:
            return "server_full"
        if self._pending_total >= self.max_pending:
            return "too_many_pending"
        if self._pending[ip] >= self.max_pending_per_ip:
            return "too_many_pending_from_ip"
        return None

    def _decided(self, ip: str) -> None:
        with self._lock:
            self._pending[ip] -= 1
            self._pending_total -= 1
            if self._pending[ip] <= 0:
                del self._pending[ip]

    def _run(self, work: Callable[[], None], refusing: bool) -> None:
        try:
            work()
        finally:
            with self._lock:
                if refusing:
                    self._refusing -= 1
                else:
                    self._active -= 1

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
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        self._workers.close(deadline)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> WebSocketServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


class _Listener(socket.socket):
    """A listening socket whose ``family`` and ``type`` are looked up once.

    ``socket.accept()`` reads both for every new connection, and each read converts an
    int into an enum: at thousands of connections a second that showed in profiles.
    """

    def __init__(self, *, fileno: int) -> None:
        super().__init__(fileno=fileno)
        self._family = super().family
        self._type = super().type

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    @property
    def type(self) -> socket.SocketKind:
        return self._type


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
