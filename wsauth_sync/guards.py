"""Guards around the core that need a clock, a lock or a thread.

* :class:`RevocationWatch`: finds the open connections of revoked credentials and
  closes them with 1008, checking the verifier once per interval for all of them.
* :class:`FailedAuthLimiter`: a token bucket per client IP for failed authentications;
  over budget the core answers 429 before doing any verifier work.
* :class:`TimeLimitedVerifier`: runs a verifier on a small pool of daemon threads and
  gives up (503) after a timeout, so a hung database or key server cannot hold a
  handshake past its deadline.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ConfigurationError, ServiceUnavailable, TooManyRequests
from .timers import TIMERS
from .verifiers import Identity, RevocationSource, Verifier
from .workers import WorkerPool

if TYPE_CHECKING:
    from .connection import WebSocket


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
    the number of connections, and only while connections with a credential id are open.
    """

    def __init__(self, source: RevocationSource, *, interval: float = 5.0) -> None:
        if interval <= 0:
            raise ConfigurationError("the revocation check interval must be positive")
        self.source = source
        self.interval = interval
        self._lock = threading.Lock()
        self._open: dict[str, set[WebSocket]] = {}
        self._checked = time.time()
        self._scheduled = False

    def add(self, ws: WebSocket) -> None:
        credential = ws.identity.credential_id
        if credential is None:
            return
        with self._lock:
            self._open.setdefault(credential, set()).add(ws)
            if self._scheduled:
                return
            self._scheduled = True
            # Revocations between the handshake and now count too.
            self._checked = min(self._checked, time.time() - self.interval)
        TIMERS.schedule(self, time.monotonic() + self.interval)

    def discard(self, ws: WebSocket) -> None:
        credential = ws.identity.credential_id
        with self._lock:
            connections = self._open.get(credential or "")
            if connections is not None:
                connections.discard(ws)
                if not connections:
                    del self._open[credential or ""]

    def on_timer(self, now: float) -> float | None:
        """Ask the verifier what was revoked since the last check; close those."""
        with self._lock:
            if not self._open:
                self._scheduled = False
                return None
            since, self._checked = self._checked, time.time()
        # One second of overlap: a revocation stamped during the last query is not missed.
        for credential in set(self.source.revoked_since(since - 1.0)):
            with self._lock:
                doomed = list(self._open.get(credential, ()))
            for ws in doomed:
                ws.close_soon(1008, "credential revoked")
        return now + self.interval
