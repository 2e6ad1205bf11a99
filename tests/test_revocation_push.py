"""Revocations reach every instance: pushed by PostgreSQL NOTIFY, polled as the fallback.

Real server processes and real PostgreSQL (a cluster of this module's own, which the
tests restart and whose listening backends they terminate), real WebSocket clients.
Revocations are read by log position, so a revoking host whose clock is off by an hour
is tested too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerProcess, make_app, running, wait_for, ws_url
from pg import Cluster, cluster, sql
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wsauth_sync.config import DEFAULT_REVOCATION_INTERVAL
from wsauth_sync.echo import WELCOME
from wsauth_sync.keystore import KeyStore, SQLiteKeyStore
from wsauth_sync.pgstore import REVOCATION_CHANNEL, PostgresKeyStore

#: The bound the issue sets on a pushed revocation, from the revoking command's return.
PUSH_BOUND = 1.0
#: Room for a loaded machine on top of a poll interval (the documented fallback bound).
POLL_MARGIN = 2.0


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as server:
        yield server


def listeners(pg: Cluster) -> set[int]:
    """Backends LISTENing for revocations (one per watching server process)."""
    return {
        row[0]
        for row in sql(
            pg, "SELECT pid FROM pg_stat_activity WHERE query = %s", f"LISTEN {REVOCATION_CHANNEL}"
        )
    }


def terminate(pids: set[int], pg: Cluster) -> None:
    for pid in pids:
        assert sql(pg, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]


def revoke_from_another_host(db: str, key_id: str, *, skew: float = 0.0) -> float:
    """``wsauth-sync keys revoke`` in a process of its own, its clock off by ``skew`` s.

    Returns the monotonic time at which the command returned.
    """
    script = (
        "import sys, time\n"
        "real = time.time\n"
        f"time.time = lambda: real() + {skew!r}\n"
        "from wsauth_sync.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "keys", "revoke", key_id, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    return returned


def closes_revoked(ws: ClientConnection, since: float, timeout: float) -> float:
    """Wait for the server's ``1008 credential revoked``; seconds from ``since`` to it."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=timeout)
    elapsed = time.monotonic() - since
    assert info.value.rcvd is not None, "the server sent no Close frame"
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "credential revoked")
    return elapsed


def still_open(ws: ClientConnection) -> None:
    ws.send("still here")
    assert ws.recv(timeout=5) == "You said: still here"


def connecting(url: str, key: str) -> ClientConnection:
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5)


@contextlib.contextmanager
def opened(url: str, key: str) -> Iterator[ClientConnection]:
    with connecting(url, key) as ws:
        assert ws.recv(timeout=5) == WELCOME
        yield ws


def wait_for_new_listeners(pg: Cluster, old: set[int], count: int, timeout: float) -> set[int]:
    """Wait until ``count`` listening backends not in ``old`` exist; those are returned."""
    assert wait_for(lambda: len(listeners(pg) - old) == count, timeout=timeout), (
        f"the listeners did not come back: {listeners(pg)} (before: {old})"
    )
    return listeners(pg) - old


# -- two server processes on one PostgreSQL ----------------------------------------------


def test_a_revocation_on_any_host_closes_its_connections_on_every_instance(pg: Cluster) -> None:
    admin = PostgresKeyStore(pg.dsn)
    keys = {name: admin.create(name) for name in ("first", "second", "third", "fourth", "spared")}
    admin.close_connection()
    servers = [
        ServerProcess(
            [sys.executable, "-m", "wsauth_sync", "echo", "--port", "0", "--keys-db", pg.dsn]
        )
        for _ in range(2)
    ]
    try:
        urls = [server.expect(r"Listening on (ws://\S+)").group(1) for server in servers]
        clients, before = contextlib.ExitStack(), listeners(pg)
        conns = {
            name: [clients.enter_context(opened(url, key)) for url in urls]
            for name, (key, _) in keys.items()
        }
        # Each instance listens once it has a connection to watch.
        listening = wait_for_new_listeners(pg, before, 2, timeout=15)

        def revoke_and_expect(name: str, bound: float) -> None:
            returned = revoke_from_another_host(pg.dsn, keys[name][1].key_id)
            for ws in conns[name]:
                elapsed = closes_revoked(ws, returned, timeout=bound + 5)
                assert elapsed <= bound, f"{name}: closed {elapsed:.2f} s after the revoke"
            for ws in conns["spared"]:
                still_open(ws)

        revoke_and_expect("first", PUSH_BOUND)
        # The listening connections die: each instance notices and listens again.
        terminate(listening, pg)
        listening = wait_for_new_listeners(pg, listening, 2, timeout=15)
        revoke_and_expect("second", PUSH_BOUND)
        # A restart drops every connection; a revocation right after it is caught by the
        # listener's catch-up check, at worst by the next periodic one.
        pg.restart()
        revoke_and_expect("third", DEFAULT_REVOCATION_INTERVAL + POLL_MARGIN)
        wait_for_new_listeners(pg, listening, 2, timeout=15)
        revoke_and_expect("fourth", PUSH_BOUND)
        clients.close()
    finally:
        statuses = [server.stop() for server in servers]
    assert statuses == [0, 0]
    for server in servers:
        assert "revocation notifications unavailable (" in server.output
        assert "revocation notifications resumed" in server.output
        for key, _ in keys.values():
            assert key not in server.output
        assert "postgres@" not in server.output  # the DSN is never logged


def test_concurrent_revocations_all_close_at_once_and_a_forged_announcement_closes_nothing(
    pg: Cluster,
) -> None:
    admin = PostgresKeyStore(pg.dsn)
    doomed = [admin.create(f"burst-{n}") for n in range(20)]
    spared, spared_record = admin.create("spared")
    store = PostgresKeyStore(pg.dsn)
    app = make_app(verifier=store)  # the default 5 s interval: a close within 1 s was pushed
    with (
        running(app) as server,
        contextlib.ExitStack() as stack,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        url, before = ws_url(server), listeners(pg)
        conns = [stack.enter_context(opened(url, key)) for key, _ in doomed]
        ws_spared = stack.enter_context(opened(url, spared))
        listening = wait_for_new_listeners(pg, before, 1, timeout=10)
        # Anyone who may connect to the database can NOTIFY: an announcement is only a
        # reason to read the log, never a revocation itself.
        sql(pg, "SELECT pg_notify(%s, %s)", REVOCATION_CHANNEL, spared_record.key_id)
        sql(pg, "SELECT pg_notify(%s, %s)", REVOCATION_CHANNEL, "'; DROP TABLE x; --")
        still_open(ws_spared)
        # Eight revokers at once, each on its own connection, appending to the log in turns.
        assert all(pool.map(lambda pair: admin.revoke(pair[1].key_id), doomed, timeout=60))
        returned = time.monotonic()
        for ws in conns:
            assert closes_revoked(ws, returned, timeout=6) <= PUSH_BOUND
        still_open(ws_spared)
        assert listening <= listeners(pg)  # announcements never cost the listener its connection
    # Nothing left to watch: the listener lets its connection go.
    assert wait_for(lambda: not listening & listeners(pg), timeout=10)
    admin.close_connection()


# -- the fallback: periodic checks while the feed is down ----------------------------------


class HeldFeed:
    """The store, whose feed cannot be reopened while ``held`` is set."""

    def __init__(self, store: PostgresKeyStore) -> None:
        self.store = store
        self.held = threading.Event()
        self.refused = 0

    def __call__(self, token: str, /) -> object:
        return self.store(token)

    def revocation_feed(self) -> object:
        if self.held.is_set():
            self.refused += 1
            import psycopg

            raise psycopg.OperationalError("connection refused")
        return self.store.revocation_feed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_while_the_feed_is_down_checks_still_close_within_the_interval_and_it_recovers(
    pg: Cluster, logs: pytest.LogCaptureFixture
) -> None:
    interval = 3.0
    admin = PostgresKeyStore(pg.dsn)
    (doomed, doomed_record), (later, later_record), (spared, _) = (
        admin.create(name) for name in ("doomed", "later", "spared")
    )
    source = HeldFeed(PostgresKeyStore(pg.dsn))
    app = make_app(verifier=source, revocation_interval=interval)
    with running(app) as server:
        url, before = ws_url(server), listeners(pg)
        with (
            opened(url, doomed) as ws,
            opened(url, later) as ws_later,
            opened(url, spared) as ws_spared,
        ):
            listening = wait_for_new_listeners(pg, before, 1, timeout=10)
            source.held.set()
            terminate(listening, pg)
            assert wait_for(lambda: source.refused >= 1, timeout=10)
            assert admin.revoke(doomed_record.key_id)
            elapsed = closes_revoked(ws, time.monotonic(), timeout=interval + 5)
            assert elapsed <= interval + POLL_MARGIN
            still_open(ws_spared)
            source.held.clear()
            wait_for_new_listeners(pg, listening, 1, timeout=20)
            assert wait_for(
                lambda: any("notifications resumed" in r.getMessage() for r in logs.records),
                timeout=5,
            )
            assert admin.revoke(later_record.key_id)
            assert closes_revoked(ws_later, time.monotonic(), timeout=interval + 5) <= PUSH_BOUND
            still_open(ws_spared)
    admin.close_connection()
    down = [r for r in logs.records if "notifications unavailable" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING  # once per outage


# -- hosts whose clocks disagree -----------------------------------------------------------


class PollOnly:
    """The store without its feed: only the periodic checks report revocations.

    It delegates through ``__getattr__`` as users' wrappers (metrics, logging) do, which
    also proves the app still finds ``revoked_after`` on such a wrapper: since Python 3.12
    ``isinstance()`` on a runtime-checkable Protocol no longer does.
    """

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    def __call__(self, token: str, /) -> object:
        return self.store(token)

    def __getattr__(self, name: str) -> Any:
        if name == "revocation_feed":
            raise AttributeError(name)
        return getattr(self.store, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path, pg: Cluster) -> str:
    return str(tmp_path / "keys.db") if request.param == "sqlite" else pg.dsn


def open_store(location: str) -> KeyStore:
    return (
        SQLiteKeyStore(location)
        if not location.startswith("postgresql")
        else PostgresKeyStore(location)
    )


@pytest.mark.parametrize("skew", [-3600.0, 3600.0], ids=["behind", "ahead"])
def test_a_revocation_from_a_host_whose_clock_is_off_still_closes_connections(
    location: str, skew: float
) -> None:
    store = open_store(location)
    (doomed, record), (spared, _) = store.create("doomed"), store.create("spared")
    app = make_app(verifier=PollOnly(store), revocation_interval=0.2)
    with (
        running(app) as server,
        opened(ws_url(server), doomed) as ws,
        opened(ws_url(server), spared) as ws_spared,
    ):
        returned = revoke_from_another_host(location, record.key_id, skew=skew)
        closes_revoked(ws, returned, timeout=10)
        still_open(ws_spared)
    [revoked] = [r for r in store.records() if r.key_id == record.key_id]
    assert revoked.revoked_at is not None  # stamped with the revoking host's clock


# -- a handshake in flight while its key is revoked ---------------------------------------


class Gate(PollOnly):
    """Verifies ``doomed`` then holds the handshake until ``release`` is set."""

    def __init__(self, store: KeyStore, doomed: str) -> None:
        super().__init__(store)
        self.doomed = doomed
        self.verified = threading.Event()
        self.release = threading.Event()
        self.checks = 0

    def __call__(self, token: str, /) -> object:
        identity = self.store(token)
        if token == self.doomed:
            self.verified.set()
            assert self.release.wait(10)
        return identity

    def __getattr__(self, name: str) -> Any:
        found = super().__getattr__(name)
        if not name.startswith("revoked_"):
            return found

        def counted(*args: Any) -> Any:
            self.checks += 1
            return found(*args)

        return counted


def test_a_connection_verified_just_before_its_key_is_revoked_closes_once_open(
    tmp_path: Path,
) -> None:
    store = SQLiteKeyStore(str(tmp_path / "keys.db"))
    (doomed, record), (spared, _) = store.create("doomed"), store.create("spared")
    gate = Gate(store, doomed)
    app = make_app(verifier=gate, revocation_interval=0.2)
    with (
        running(app) as server,
        opened(ws_url(server), spared) as ws_spared,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        handshake = pool.submit(connecting, ws_url(server), doomed)
        assert gate.verified.wait(10)
        assert store.revoke(record.key_id)
        # Checks run, and see the revocation, before the connection is registered.
        revoked_at, before = time.monotonic(), gate.checks
        assert wait_for(
            lambda: gate.checks >= before + 3 and time.monotonic() - revoked_at > 1.5, timeout=10
        )
        gate.release.set()
        with handshake.result(timeout=10) as ws:
            closes_revoked(ws, time.monotonic(), timeout=3)
        still_open(ws_spared)


# -- the log and the announcement -----------------------------------------------------------


def test_revoking_announces_the_key_id_only_and_only_when_committed(pg: Cluster) -> None:
    store = PostgresKeyStore(pg.dsn)
    key, record = store.create("svc")
    import psycopg

    with psycopg.connect(pg.dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {REVOCATION_CHANNEL}")
        assert store.revoke(record.key_id)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert payloads == [record.key_id]
        assert key.rsplit("_", 1)[1] not in repr(payloads)
        assert not store.revoke(record.key_id)  # already revoked: nothing announced
        assert not store.revoke("nosuchkey000")
        assert list(listener.notifies(timeout=0.5)) == []
    store.close_connection()


def test_log_entries_commit_in_number_order(pg: Cluster) -> None:
    store = PostgresKeyStore(pg.dsn)
    _, first = store.create("first")
    _, second = store.create("second")
    _, start = store.revoked_after(0)
    results: list[bool] = []
    other = threading.Thread(target=lambda: results.append(store.revoke(second.key_id)))
    reader = PostgresKeyStore(pg.dsn)
    with store._cursor() as cursor:  # the first revocation, held open before its commit
        cursor.execute("UPDATE wsauth_keys SET revoked_at = 0 WHERE key_id = %s", (first.key_id,))
        store._log_revocation(cursor, first.key_id, 0.0)
        other.start()
        other.join(1.0)
        assert other.is_alive(), "the second revocation was numbered before the first ended"
        assert reader.revoked_after(start) == ([], start)
    other.join(10)
    assert results == [True]
    assert reader.revoked_after(start) == ([first.key_id, second.key_id], start + 2)
    store.close_connection()
    reader.close_connection()
