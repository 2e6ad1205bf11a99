"""The threaded server: an accept loop that reads request heads, one thread per connection.

:class:`WebSocketServer` accepts connections and reads their request heads itself, all
at once and without a thread each (see :mod:`~wsauth_sync.pending`): silent and slow
clients cost memory, not threads, and past the pending caps the oldest is dropped. A
whole head gets a thread from a pool, which decides, answers and runs the handler
(:func:`~wsauth_sync.socket_shell.finish_handshake`), under a cap on connections. Shutdown
closes open connections with 1001.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import selectors
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType

from .config import WebSocketApp
from .connection import WebSocket
from .core import audit
from .core.errors import ConfigurationError, ServiceUnavailable
from .core.handshake import Rejected, ServerHandshake
from .core.request import Address
from .core.sources import CookieToken, QueryToken
from .pending import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP, Head, PendingHeads
from .socket_shell import finish_handshake
from .workers import WorkerPool

logger = logging.getLogger("wsauth_sync")

#: Listen queue length by default: a burst of clients waits in the kernel, not refused.
DEFAULT_BACKLOG = 1024
# Connections taken from the listen queue per wake-up, so heads already read get their
# deadlines checked between bursts.
_ACCEPTS_PER_WAKEUP = 64
# Out of file descriptors with nothing to evict: wait this long before accepting again.
_FD_EXHAUSTED_PAUSE = 0.05


class WebSocketServer:
    """A threaded WebSocket server: one thread per connection, under caps.

    The listening socket is bound in the constructor, so ``port=0`` resolves at once
    (see :attr:`address`). Use :meth:`serve_forever` in the current thread, or
    :meth:`start` / the context manager for a background thread.

    Args:
        app: routes, policy and limits.
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one.
        max_connections: connections being decided or served at once (threads);
            beyond it handshakes get 503 + ``Retry-After: 1``.
        max_pending: handshakes whose head is still arriving; past it the oldest is
            dropped to make room. They cost memory (a few KiB each), not threads.
        max_pending_per_ip: handshakes in progress from one client address; past it
            that address's oldest is dropped. Trusted proxies are exempt.
        backlog: listen queue length; large enough that bursts are not refused.
        ssl_context: serve ``wss://``; the TLS handshake counts against the
            handshake deadline.
    """

    #: Extra threads allowed to answer 503 at capacity; past that, sockets are dropped.
    overflow_threads = 16

    def __init__(
        self,
        app: WebSocketApp,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_connections: int = 256,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
        backlog: int = DEFAULT_BACKLOG,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if min(max_connections, max_pending, max_pending_per_ip, backlog) < 1:
            raise ConfigurationError("connection, pending and backlog limits must be positive")
        self.app = app
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.ssl_context = ssl_context
        self._listener = _Listener(
            fileno=socket.create_server((host, port), backlog=backlog).detach()
        )
        self._listener.setblocking(False)
        _warn_if_exposed(app, host, tls=ssl_context is not None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # signal.set_wakeup_fd needs it
        self._lock = threading.Lock()
        self._workers = WorkerPool()
        self._active = 0  # connections being decided or served (threads)
        self._refusing = 0  # connections being told 503
        self._pending: PendingHeads | None = None  # lives in serve_forever
        self._open: set[WebSocket] = set()
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None

    @property
    def address(self) -> Address:
        """The ``(host, port)`` the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def pending_handshakes(self) -> int:
        """Connections whose request head is still arriving."""
        return len(self._pending) if self._pending is not None else 0

    def serve_forever(self) -> None:
        """Accept connections and read their heads until :meth:`shutdown` is called."""
        with selectors.DefaultSelector() as selector:
            pending = self._pending = PendingHeads(
                make_handshake=self._handshake,
                selector=selector,
                ready=self._ready,
                timeout=self.app.handshake_timeout,
                max_pending=self.max_pending,
                max_per_ip=self.max_pending_per_ip,
                exempt=self.app.policy.trusted_proxies,
                ssl_context=self.ssl_context,
            )
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            previous = self._wake_on_signals()
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(pending.time_left(time.monotonic())):
                        self._on_event(key)
                    pending.expire(time.monotonic())
            finally:
                if previous is not None:
                    signal.set_wakeup_fd(previous)
                pending.close_all()

    def _wake_on_signals(self) -> int | None:
        """In the main thread, have signals wake the selector; the previous wakeup fd.

        A signal the kernel delivers to another thread does not interrupt the main
        thread's wait, and Python runs handlers (Ctrl-C, the CLI's SIGTERM) only in the
        main thread: with nothing pending the loop could sleep through it for good.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        return signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    def _on_event(self, key: selectors.SelectorKey) -> None:
        try:
            if key.fileobj is self._listener:
                self._accept_some()
            elif key.fileobj is self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(64)  # a signal's byte: its handler runs on return
            elif key.data is not None:
                assert self._pending is not None
                self._pending.advance(key.data)
        except Exception:  # a bug with one connection must never stop the accept loop
            logger.exception("serving a pending handshake failed")

    def _handshake(self, address: Address) -> ServerHandshake:
        return ServerHandshake(self.app.policy, limits=self.app.head_limits, client=address)

    def _accept_some(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            try:
                self._admit(sock, address[:2])
            except Exception:  # one connection's failure must never stop the accept loop
                logger.exception("accepting a connection failed")
                sock.close()

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return  # the client gave up before we got to it
        # Out of descriptors: free the oldest pending handshake, or pause accepting
        # briefly rather than spin on a listener that stays readable.
        logger.warning("accept failed: %s", exc.strerror)
        if self._pending is not None and len(self._pending):
            self._pending.drop_oldest("pending_evicted")
        else:
            time.sleep(_FD_EXHAUSTED_PAUSE)

    def _admit(self, sock: socket.socket, address: Address) -> None:
        with self._lock:
            full = self._active >= self.max_connections
        if not full:
            assert self._pending is not None
            self._pending.admit(sock, address)
        elif self.ssl_context is not None:
            sock.close()  # no TLS session yet, so no way to answer in plain text
            audit.log_dropped(client=address, reason="server_full")
        else:  # at capacity: answer without reading the request
            handshake = self._handshake(address)
            self._refuse(
                sock,
                address,
                handshake,
                handshake.reject(ServiceUnavailable("server_full", retry_after=1)),
                deadline=time.monotonic() + self.app.handshake_timeout,
            )

    def _ready(
        self,
        sock: socket.socket,
        address: Address,
        handshake: ServerHandshake,
        head: Head,
        deadline: float,
    ) -> None:
        """A head is whole (or refused): decide and serve it on a pooled thread."""
        sock.setblocking(True)
        if head is True:
            with self._lock:
                full = self._active >= self.max_connections
                if not full:
                    self._active += 1
            if full:
                head = handshake.reject(ServiceUnavailable("server_full", retry_after=1))
        if head is not True:
            self._refuse(sock, address, handshake, head, deadline=deadline)
            return
        work = functools.partial(
            finish_handshake,
            sock,
            handshake,
            head,
            self.app,
            deadline=deadline,
            address=address,
            open_connections=self._open,
        )
        self._submit(sock, address, handshake, work, refusing=False)

    def _refuse(
        self,
        sock: socket.socket,
        address: Address,
        handshake: ServerHandshake,
        rejected: Rejected,
        *,
        deadline: float,
    ) -> None:
        """Answer a refusal on an overflow thread, which lets the client read all of it;
        with none to spare, answer at once without waiting (the client may see a reset)."""
        with self._lock:
            spare = self._refusing < self.overflow_threads
            if spare:
                self._refusing += 1
        if not spare:
            _answer_now(sock, address, rejected)
            return
        work = functools.partial(
            finish_handshake,
            sock,
            handshake,
            rejected,
            self.app,
            deadline=deadline,
            address=address,
        )
        self._submit(sock, address, handshake, work, refusing=True)

    def _submit(
        self,
        sock: socket.socket,
        address: Address,
        handshake: ServerHandshake,
        work: Callable[[], None],
        *,
        refusing: bool,
    ) -> None:
        try:
            self._workers.submit(functools.partial(self._run, sock, work, refusing))
        except RuntimeError:  # "can't start new thread": out of memory or thread limit
            self._done(refusing=refusing)
            _answer_now(
                sock, address, handshake.reject(ServiceUnavailable("no_thread", retry_after=1))
            )

    def _run(self, sock: socket.socket, work: Callable[[], None], refusing: bool) -> None:
        try:
            work()
        except OSError:
            pass  # the peer vanished mid-answer
        finally:
            sock.close()
            self._done(refusing=refusing)

    def _done(self, *, refusing: bool) -> None:
        with self._lock:
            if refusing:
                self._refusing -= 1
            else:
                self._active -= 1

    def start(self) -> WebSocketServer:
        """Run :meth:`serve_forever` in a background thread; returns ``self``."""
        self._accept_thread = threading.Thread(
            target=self.serve_forever, daemon=True, name="wsauth-accept"
        )
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
        closers = [
            threading.Thread(target=ws.close, args=(1001, "server shutting down"), daemon=True)
            for ws in list(self._open)
        ]
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


def _answer_now(sock: socket.socket, address: Address, rejected: Rejected) -> None:
    """Log and send a refusal without blocking, then close (no thread to wait with)."""
    audit.log_rejected(client=address, error=rejected.error, request=rejected.request)
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(rejected.response)
    sock.close()


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
    exposed = sorted(
        {
            source.name
            for source in app.policy.sources
            if isinstance(source, (QueryToken, CookieToken))
        }
    )
    if tls or loopback or not exposed:
        return None
    return (
        f"listening on {host} without TLS with {'/'.join(exposed)} tokens: they travel "
        "in clear text; use ssl_context (wss://) or a TLS-terminating proxy"
    )


def serve(
    app: WebSocketApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_connections: int = 256,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` in the current thread until interrupted (Ctrl-C)."""
    server = WebSocketServer(
        app, host=host, port=port, max_connections=max_connections, ssl_context=ssl_context
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
