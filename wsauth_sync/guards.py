"""Guards around the core that need a clock, a lock or a thread.

* :class:`RevocationWatch`: finds the open connections of revoked credentials and
  closes them with 1008, checking the verifier once per interval for all of them, on a
  thread of its own (a hung database must not stall the shared timer thread).
* :class:`FailedAuthLimiter`: a token bucket per client IP for failed authentications;
  over budget the core answers 429 before doing any verifier work.
* :class:`TimeLimitedVerifier`: runs a verifier on a small pool of daemon threads and
  gives up (503) after a timeout, so a hung database or key server cannot hold a
  handshake past its deadline.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ConfigurationError, ServiceUnavailable, TooManyRequests
from .verifiers import Identity, RevocationSource, Verifier
from .workers import WorkerPool

if TYPE_CHECKING:
    from .connection import WebSocket

logger = logging.getLogger("wsauth_sync")


class FailedAuthLimiter:
    """Token bucket per client IP, spent by failed authentications.

    Each client may fail ``burst`` times in a row; the budget refills at ``rate`` per
    second. Memory is bounded: past ``max_clients`` the least recently seen is dropped.

    Args:
        rate: failures per second a client earns back.
        burst: failures allowed at once.
        max_clients: buckets kept.
        clock: monotonic clock, replaceable in tests.
    """

    def __init__(self, *, rate: float = 1.0, burst: int = 20, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ConfigurationError("rate, burst and max_clients must be positive")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, client: str, now: float) -> float:
        tokens, stamp = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - stamp) * self.rate)

    def check(self, client: str) -> None:
        """Raise 429 if ``client`` has no failure left to spend."""
        with self._lock:
            level = self._level(client, self._clock())
        if level < 1:
            raise TooManyRequests("too_many_failures",
                                  retry_after=max(1, math.ceil((1 - level) / self.rate)))

    def failed(self, client: str) -> None:
        """Spend one failure of ``client``'s budget."""
        with self._lock:
            now = self._clock()
            self._buckets[client] = (self._level(client, now) - 1, now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


class TimeLimitedVerifier:
    """Wrap a verifier so that a call taking longer than ``timeout`` becomes a 503.

    The call runs on one of ``workers`` daemon threads; the handshake thread waits at
    most ``timeout``. A hung call keeps its worker until it returns, so a backend that
    hangs for everyone degrades to fast 503s rather than piling up handshake threads.
    """

    def __init__(self, verifier: Verifier, *, timeout: float = 5.0, workers: int = 32) -> None:
        if timeout <= 0 or workers < 1:
            raise ConfigurationError("timeout and workers must be positive")
        self.verifier = verifier
        self.timeout = timeout
        self.workers = workers
        self._pool = WorkerPool(keep_idle=workers, max_threads=workers, name="wsauth-verify")

    def __call__(self, token: str, /) -> Identity:
        result = _Result()
        # At `workers` busy threads the call waits its turn, within the same timeout.
        self._pool.submit(functools.partial(self._run, token, result))
        if not result.done.wait(self.timeout):
            result.abandoned = True
            raise ServiceUnavailable("verifier_timeout")
        if result.error is not None:
            raise result.error
        assert result.value is not None  # set together with done, or error was
        return result.value

    def _run(self, token: str, result: _Result) -> None:
        if result.abandoned:
            return  # the handshake already answered 503
        try:
            result.value = self.verifier(token)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            result.error = exc
        result.done.set()

    def __repr__(self) -> str:
        return f"TimeLimitedVerifier({self.verifier!r}, timeout={self.timeout})"


class _Result:
    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Identity | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class RevocationWatch:
    """Open connections by credential id; every ``interval`` seconds, close revoked ones.

    One query per interval for the whole process (``source.revoked_since``), whatever
    the number of connections, on a daemon thread of its own that runs only while
    connections with a credential id are open: a slow, hung or restarting database
    delays revocation closes, never the shared timer thread (expiry, keepalive). A failed
    check is logged (a WARNING naming the error class only) and retried after a delay
    that doubles from ``interval`` up to ``max_backoff``; the next successful check asks
    from the last successful one, so no revocation made meanwhile is missed. A source
    with a ``close_connection()`` method (a key store) is told when the thread ends.

    Args:
        source: what reports revocations (a :class:`~wsauth_sync.keystore.KeyStore`).
        interval: seconds between checks.
        max_backoff: longest delay between failed checks (at least ``interval``).

    Raises:
        ConfigurationError: a delay that is not positive.
    """

    def __init__(self, source: RevocationSource, *, interval: float = 5.0,
                 max_backoff: float = 30.0) -> None:
        if interval <= 0 or max_backoff <= 0:
            raise ConfigurationError("the revocation interval and max_backoff must be positive")
        self.source = source
        self.interval = interval
        self.max_backoff = max(interval, max_backoff)
        self._lock = threading.Condition()  # also wakes the thread when the last one goes
        self._open: dict[str, set[WebSocket]] = {}
        self._checked = time.time()
        self._running = False

    def add(self, ws: WebSocket) -> None:
        """Watch ``ws`` (if its credential has an id) until :meth:`discard`."""
        credential = ws.identity.credential_id
        if credential is None:
            return
        with self._lock:
            self._open.setdefault(credential, set()).add(ws)
            if self._running:
                return
            # Revocations between the handshake and now count too.
            self._checked = min(self._checked, time.time() - self.interval)
            try:
                threading.Thread(target=self._run, daemon=True,
                                 name="wsauth-revocations").start()
                self._running = True
            except RuntimeError:  # no thread now: the next connection tries again
                logger.warning("revocation checks could not start a thread")

    def discard(self, ws: WebSocket) -> None:
        """Stop watching ``ws``; the thread ends once nothing is left to watch."""
        credential = ws.identity.credential_id
        with self._lock:
            connections = self._open.get(credential or "")
            if connections is not None:
                connections.discard(ws)
                if not connections:
                    del self._open[credential or ""]
                    if not self._open:
                        self._lock.notify()

    def _run(self) -> None:
        failures = 0
        try:
            while self._wait(min(self.interval * 2 ** failures, self.max_backoff)):
                # Capped so the power stays small: 2**32 intervals is past any max_backoff.
                failures = 0 if self.check() else min(failures + 1, 32)
        except BaseException:
            with self._lock:  # a bug here must not leave the next connection unwatched
                self._running = False
            raise
        finally:
            release = getattr(self.source, "close_connection", None)
            if callable(release):
                with contextlib.suppress(Exception):
                    release()

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; False (and the thread ends) once nothing is watched."""
        with self._lock:
            self._lock.wait_for(lambda: not self._open, timeout=delay)
            if not self._open:
                self._running = False
                return False
            return True

    def check(self) -> bool:
        """Ask the source what was revoked since the last good check; close those.

        Returns:
            False if the source failed (logged; the next check asks from the same time).
        """
        started = time.time()
        with self._lock:
            since = self._checked
        try:
            # One second of overlap: a revocation stamped during the last query is not missed.
            revoked = set(self.source.revoked_since(since - 1.0))
        except Exception as exc:  # noqa: BLE001 - any failure of the source is retried
            # The class only: a driver's message may quote the DSN or the query.
            logger.warning("revocation check failed (%s); open connections of revoked "
                           "credentials stay open until a check succeeds",
                           type(exc).__name__)
            return False
        with self._lock:
            self._checked = started
            doomed = [ws for credential in revoked for ws in self._open.get(credential, ())]
        for ws in doomed:
            try:
                ws.close_soon(1008, "credential revoked")
            except Exception:  # one connection's failure must not end the checks
                logger.exception("closing a revoked credential's connection failed")
        return True
