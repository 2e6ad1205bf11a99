"""Guards around the core that need a clock, a lock or a thread.

* :class:`RevocationWatch`: finds the open connections of revoked credentials and
  closes them with 1008, checking the verifier once per interval for all of them, and at
  once when the store announces a revocation, on threads of its own (a hung database
  must not stall the shared timer thread).
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

from .core.errors import ConfigurationError, ServiceUnavailable, TooManyRequests
from .core.verifiers import Identity, RevocationFeed, RevocationSource, Verifier
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

    def __init__(
        self,
        *,
        rate: float = 1.0,
        burst: int = 20,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
            raise TooManyRequests(
                "too_many_failures", retry_after=max(1, math.ceil((1 - level) / self.rate))
            )

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


#: Seconds a revocation seen by a check stays known, for a connection registered after
#: that check although its credential was verified before the revocation (a handshake
#: in flight): it is closed as soon as it is registered.
REVOKED_MEMORY = 300.0
#: Seconds before the first attempt to reopen a lost revocation feed; doubles per failure.
FEED_RETRY = 0.5
#: Longest single wait on the feed: how late the listener notices it should stop.
FEED_TICK = 1.0


class RevocationWatch:
    """Open connections by credential id; those of revoked credentials are closed with 1008.

    A check asks the source for the revocations logged after the last one it saw
    (``source.revoked_after``): positions in the store's log, not times, so hosts whose
    clocks disagree miss nothing. One check per ``interval`` for the whole process, whatever
    the number of connections, on a daemon thread of its own that runs only while
    connections with a credential id are open: a slow, hung or restarting database delays
    revocation closes, never the shared timer thread (expiry, keepalive). A failed check is
    logged (a WARNING naming the error class only) and retried after a delay that doubles
    from ``interval`` up to ``max_backoff``; the next good check reads from the same place.

    A source with a ``revocation_feed()`` method (PostgreSQL) also announces revocations as
    they commit: a second daemon thread waits on the feed and has a check run at once for
    each announcement; the periodic checks stay as the fallback. A lost feed (a database
    restart, a dropped connection) is reopened after :data:`FEED_RETRY` s, doubling up to
    ``max_backoff``, and each reopening is followed by one check, so what was revoked while
    it was down is not missed. A source with a ``close_connection()`` method (a key store)
    is told when the check thread ends.

    Args:
        source: what reports revocations (a :class:`~wsauth_sync.keystore.KeyStore`).
        interval: seconds between checks: the bound on a close when no feed is working.
        max_backoff: longest delay between failed checks, or feed reopenings (at least
            ``interval``).

    Raises:
        ConfigurationError: a delay that is not positive.
    """

    def __init__(
        self, source: RevocationSource, *, interval: float = 5.0, max_backoff: float = 30.0
    ) -> None:
        if interval <= 0 or max_backoff <= 0:
            raise ConfigurationError("the revocation interval and max_backoff must be positive")
        self.source = source
        self.interval = interval
        self.max_backoff = max(interval, max_backoff)
        self._lock = threading.Condition()  # wakes the thread: last one gone, check asked
        self._open: dict[str, set[WebSocket]] = {}
        self._position: int | None = None  # the log position of the last good check
        self._recent: dict[str, float] = {}  # credential id -> monotonic time seen revoked
        self._due = False  # the feed asked for a check
        self._running = False

    def add(self, ws: WebSocket) -> None:
        """Watch ``ws`` (if its credential has an id) until :meth:`discard`."""
        credential = ws.identity.credential_id
        if credential is None:
            return
        with self._lock:
            self._open.setdefault(credential, set()).add(ws)
            # Revoked after its handshake verified it, and seen by a check since.
            revoked = credential in self._recent
            if not self._running:
                self._start()
        if revoked:
            _close_revoked(ws)

    def _start(self) -> None:
        try:
            threading.Thread(target=self._run, daemon=True, name="wsauth-revocations").start()
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
                        self._lock.notify_all()

    def _run(self) -> None:
        stop = threading.Event()  # ends this run's listener with it
        failures = 0
        try:
            self._start_listener(stop)
            while self._wait(min(self.interval * 2**failures, self.max_backoff)):
                # Capped so the power stays small: 2**32 intervals is past any max_backoff.
                failures = 0 if self.check() else min(failures + 1, 32)
        except BaseException:
            with self._lock:  # a bug here must not leave the next connection unwatched
                self._running = False
            raise
        finally:
            stop.set()
            release = getattr(self.source, "close_connection", None)
            if callable(release):
                with contextlib.suppress(Exception):
                    release()

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` s or until a check is asked for; False (the thread ends) once
        nothing is watched."""
        with self._lock:
            self._lock.wait_for(lambda: not self._open or self._due, timeout=delay)
            if not self._open:
                self._running = False
                return False
            self._due = False  # cleared before the check: a later announcement asks again
            return True

    def _ask_check(self) -> None:
        with self._lock:
            self._due = True
            self._lock.notify_all()

    def _start_listener(self, stop: threading.Event) -> None:
        opener = getattr(self.source, "revocation_feed", None)
        if not callable(opener):
            return  # no announcements (SQLite): the periodic checks do it all
        try:
            threading.Thread(
                target=self._listen, args=(opener, stop), daemon=True, name="wsauth-revocation-feed"
            ).start()
        except RuntimeError:
            logger.warning(
                "revocation feed could not start a thread; checking every %s s", self.interval
            )

    def _listen(self, opener: Callable[[], RevocationFeed], stop: threading.Event) -> None:
        """Wait on the source's feed until ``stop``; reopen it with backoff when lost."""
        feed: RevocationFeed | None = None
        failures = 0
        down = False
        try:
            while not stop.is_set():
                if feed is None:
                    if failures and stop.wait(
                        min(FEED_RETRY * 2 ** (failures - 1), self.max_backoff)
                    ):
                        break
                    try:
                        feed = opener()
                    except Exception as exc:  # noqa: BLE001 - retried with backoff
                        down = _feed_down(down, exc, self.interval)
                        failures = min(failures + 1, 32)
                        continue
                    if down:
                        logger.info("revocation notifications resumed")
                        down = False
                    self._ask_check()  # what was revoked while nobody listened
                try:
                    if feed.wait(FEED_TICK):
                        self._ask_check()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the channel dropped: reopen it
                    down = _feed_down(down, exc, self.interval)
                    failures = min(failures + 1, 32)
                    feed.close()
                    feed = None
        finally:
            if feed is not None:
                feed.close()

    def check(self) -> bool:
        """Ask the source what was revoked since the last good check; close those.

        Returns:
            False if the source failed (logged; the next check asks from the same place).
        """
        with self._lock:
            position = self._position
        try:
            found, after = self.source.revoked_after(position or 0)
            revoked = set(found)
        except Exception as exc:  # noqa: BLE001 - any failure of the source is retried
            # The class only: a driver's message may quote the DSN or the query.
            logger.warning(
                "revocation check failed (%s); open connections of revoked "
                "credentials stay open until a check succeeds",
                type(exc).__name__,
            )
            return False
        now = time.monotonic()
        with self._lock:
            self._position = after
            self._remember(revoked, now)
            doomed = [ws for credential in revoked for ws in self._open.get(credential, ())]
        for ws in doomed:
            _close_revoked(ws)
        return True

    def _remember(self, revoked: set[str], now: float) -> None:
        for credential in revoked:
            self._recent.pop(credential, None)  # re-inserted last: the dict stays in time order
            self._recent[credential] = now
        for credential, seen in list(self._recent.items()):
            if now - seen < REVOKED_MEMORY:
                break
            del self._recent[credential]


def _close_revoked(ws: WebSocket) -> None:
    try:
        ws.close_soon(1008, "credential revoked")
    except Exception:  # one connection's failure must not end the checks
        logger.exception("closing a revoked credential's connection failed")


def _feed_down(down: bool, exc: Exception, interval: float) -> bool:
    if not down:  # once per outage: the backoff retries would repeat it
        # The class only: a driver's message may quote the DSN.
        logger.warning(
            "revocation notifications unavailable (%s); checking every %s s until they resume",
            type(exc).__name__,
            interval,
        )
    return True
