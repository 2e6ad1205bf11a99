"""API keys when the database fails: restarts, outages, a frozen server; the SQLite file mode.

The PostgreSQL tests restart, stop and freeze (SIGSTOP) a cluster of their own, so the
session's shared cluster is never disturbed. Every freeze is undone in a ``finally``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from helpers import (
    close_code,
    frame,
    handshake_bytes,
    make_app,
    open_raw_ws,
    parse_response,
    read_response,
    running,
    wait_for,
    ws_url,
)
from pg import Cluster, cluster, sql
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import Identity, InvalidToken, ServiceUnavailable
from wsauth_sync.echo import WELCOME
from wsauth_sync.guards import RevocationWatch
from wsauth_sync.keystore import KeyRecord, PostgresKeyStore, SQLiteKeyStore

#: Trust authentication ignores it; it must never reach a log line all the same.
PASSWORD = "pw-Hunter2-never-logged"
INTERVAL = 0.2
MAX_BACKOFF = 1.0


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as server:
        yield server


def dsn(pg: Cluster) -> str:
    return pg.dsn.replace("postgres@", f"postgres:{PASSWORD}@")


def watch(app: object, source: object) -> RevocationWatch:
    """Short revocation interval and backoff, so the tests' bounds stay small."""
    app.revocations = RevocationWatch(  # type: ignore[attr-defined]
        source,  # type: ignore[arg-type]
        interval=INTERVAL,
        max_backoff=MAX_BACKOFF,
    )
    return app.revocations  # type: ignore[attr-defined,no-any-return]


def create(pg: Cluster, *subjects: str) -> list[tuple[str, KeyRecord]]:
    """Keys made as an administrator would, from a connection of its own."""
    admin = PostgresKeyStore(dsn(pg))
    try:
        return [admin.create(subject) for subject in subjects]
    finally:
        admin.close_connection()


def revoke(pg: Cluster, key_id: str) -> bool:
    """Revoke as an administrator would, from a connection of its own."""
    admin = PostgresKeyStore(dsn(pg))
    try:
        return bool(admin.revoke(key_id))
    finally:
        admin.close_connection()


def revocation_warnings(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in logs.records if "revocation check failed" in r.getMessage()]


def assert_nothing_secret_logged(logs: pytest.LogCaptureFixture, *secrets: str) -> None:
    # The server's records only: the test's websockets client logs its own request line.
    ours = [r for r in logs.records if r.name.startswith("wsauth_sync")]
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in ours)
    for secret in (PASSWORD, *secrets):
        assert secret not in text


def closed_with(ws: object, timeout: float) -> tuple[int, str, float]:
    """Wait for the server's Close on a websockets client: code, reason, seconds waited."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=timeout)  # type: ignore[attr-defined]
    assert info.value.rcvd is not None, "the server sent no Close frame"
    return info.value.rcvd.code, info.value.rcvd.reason, time.monotonic() - started


def connections_named(pg: Cluster, application: str) -> int:
    """Connections the database holds open for ``application_name=application``."""
    [(count,)] = sql(
        pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", application
    )
    return int(count)


def test_a_verifier_thread_that_ends_gives_its_connection_back(pg: Cluster) -> None:
    # A server's verifier threads come and go; each opened a connection of its own, which
    # is closed, explicitly, as its thread ends: one left to the garbage collector is a
    # ResourceWarning on Python 3.13 (an error here, as under -W error).
    [(key, _)] = create(pg, "svc-threads")
    # Named, so that connections other tests leave behind (a watch reopening its feed)
    # are not counted.
    store = PostgresKeyStore(dsn(pg) + "?application_name=verifier-threads")
    assert connections_named(pg, "verifier-threads") == 1  # the creating thread's
    opened, counted = threading.Barrier(21, timeout=30), threading.Barrier(21, timeout=30)

    def verify_once() -> None:
        assert store(key).subject == "svc-threads"
        opened.wait()  # all 20 connections are open at once...
        counted.wait()  # ...and seen by the database before any thread ends

    threads = [threading.Thread(target=verify_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    opened.wait()
    during = connections_named(pg, "verifier-threads")
    counted.wait()
    assert during == 21
    for thread in threads:
        thread.join(30)
    assert wait_for(lambda: connections_named(pg, "verifier-threads") == 1, timeout=10), (
        connections_named(pg, "verifier-threads")
    )
    assert store(key).subject == "svc-threads"  # the store itself goes on


FORKING = """
import os, sys, threading
from wsauth_sync.keystore import PostgresKeyStore

store = PostgresKeyStore(sys.argv[1])
key, _ = store.create("parent")  # the main thread's connection
ready, forked, done = threading.Event(), threading.Event(), []

def verifier_thread():  # a second connection, held by a thread the child does not have
    store(key)
    ready.set()
    forked.wait(30)
    done.append(store.create("after-fork")[1].subject)  # a write: not retried on failure

thread = threading.Thread(target=verifier_thread)
thread.start()
ready.wait(30)
child = os.fork()
if child == 0:
    sys.exit(0)  # a worker's whole interpreter shutdown: atexit, module teardown, GC
os.waitpid(child, 0)
forked.set()
thread.join(30)
print(done, store.revoke(store.create("main")[1].key_id), flush=True)
"""


def test_a_forked_child_leaves_its_parents_connections_open(pg: Cluster) -> None:
    # gunicorn --preload, multiprocessing: the child shares the parent's sockets. Closing
    # them there sends PostgreSQL's Terminate on the parent's sessions, and the parent's
    # next write fails. The child drops its copies without closing them.
    done = subprocess.run(
        [sys.executable, "-c", FORKING, dsn(pg) + "?application_name=forking-parent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['after-fork'] True"
    # Nothing lingers once the parent is gone.
    assert wait_for(lambda: connections_named(pg, "forking-parent") == 0, timeout=10)


# -- restarts and outages ------------------------------------------------------------------


def test_revocation_closes_connections_after_a_database_restart(
    pg: Cluster, logs: pytest.LogCaptureFixture
) -> None:
    (key, record), (other, _) = create(pg, "svc-a", "svc-b")
    store = PostgresKeyStore(dsn(pg), query_timeout=2.0)
    app = make_app(verifier=store)
    watcher = watch(app, store)
    with running(app) as server, connect(f"{ws_url(server)}?token={key}", open_timeout=5) as doomed:
        assert doomed.recv(timeout=5) == WELCOME
        # The watch has asked once: its connection exists, and dies with the restart.
        assert wait_for(lambda: watcher._position is not None, timeout=5)
        pg.restart()
        for _ in range(5):  # each thread's dead connection is replaced, not answered 503
            with connect(f"{ws_url(server)}?token={other}", open_timeout=5) as ws:
                assert ws.recv(timeout=5) == WELCOME
        assert revoke(pg, record.key_id)
        code, reason, _ = closed_with(doomed, timeout=INTERVAL + MAX_BACKOFF + 5)
        assert (code, reason) == (1008, "credential revoked")
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_url(server)}?token={key}", open_timeout=5)
        assert refused.value.response.status_code == 401
        # Nothing left to watch: the watch's thread ends.
        assert wait_for(lambda: not watcher._running, timeout=5)
    assert_nothing_secret_logged(logs, key, other)


def test_revocation_checks_back_off_while_the_database_is_down_then_resume(
    pg: Cluster, logs: pytest.LogCaptureFixture
) -> None:
    [(key, record)] = create(pg, "svc-a")
    store = PostgresKeyStore(dsn(pg), query_timeout=2.0)
    app = make_app(verifier=store)
    watch(app, store)
    with running(app) as server, connect(f"{ws_url(server)}?token={key}", open_timeout=5) as doomed:
        assert doomed.recv(timeout=5) == WELCOME
        pg.stop()
        try:
            assert wait_for(lambda: len(revocation_warnings(logs)) >= 3, timeout=15)
        finally:
            pg.start()
        warnings = revocation_warnings(logs)
        assert all(r.levelno == logging.WARNING for r in warnings)
        # Each failed check waits twice as long as the one before (a lower bound only).
        gaps = [b.created - a.created for a, b in zip(warnings, warnings[1:])]
        assert gaps[0] >= 2 * INTERVAL * 0.9 and gaps[1] >= 4 * INTERVAL * 0.9, gaps
        assert revoke(pg, record.key_id)
        code, reason, _ = closed_with(doomed, timeout=INTERVAL + MAX_BACKOFF + 5)
        assert (code, reason) == (1008, "credential revoked")
    assert_nothing_secret_logged(logs, key)


def test_every_thread_reconnects_after_a_restart_without_a_503(pg: Cluster) -> None:
    [(key, _)] = create(pg, "svc-a")
    store = PostgresKeyStore(dsn(pg))
    restarted = threading.Barrier(5, timeout=30)
    outcomes: list[str] = []

    def verify_twice() -> None:
        store(key)  # this thread now has a connection of its own
        restarted.wait()  # the main thread restarts the server
        restarted.wait()
        try:
            outcomes.append(store(key).subject)
        except ServiceUnavailable as exc:
            outcomes.append(exc.reason)
        finally:
            store.close_connection()

    threads = [threading.Thread(target=verify_twice) for _ in range(4)]
    for thread in threads:
        thread.start()
    restarted.wait()
    pg.restart()
    restarted.wait()
    for thread in threads:
        thread.join(30)
    assert outcomes == ["svc-a"] * 4


def test_a_query_on_a_frozen_database_gives_up_in_time_and_recovers(pg: Cluster) -> None:
    [(key, _)] = create(pg, "svc-a")
    store = PostgresKeyStore(dsn(pg), query_timeout=0.5)
    results: list[object] = []
    frozen = threading.Event()

    def verify() -> None:
        started = time.monotonic()
        try:
            results.append(store(key).subject)
        except ServiceUnavailable as exc:
            results.append((exc.reason, time.monotonic() - started))

    def verify_before_and_during() -> None:
        verify()  # this thread's connection is open...
        frozen.wait(30)
        verify()  # ...and its server stops answering

    caller = threading.Thread(target=verify_before_and_during, daemon=True)
    caller.start()
    assert wait_for(lambda: results, timeout=10)
    with pg.frozen():
        frozen.set()
        caller.join(10)
        assert not caller.is_alive(), "the query on the frozen server never returned"
    assert results[0] == "svc-a"
    reason, waited = cast("tuple[str, float]", results[1])
    assert reason == "keystore_error"
    assert waited < 0.5 + 1.0 + 1.5  # query_timeout + CUT_GRACE, with room for load
    verify()
    assert results[2] == "svc-a"


# -- a frozen database while connections are open -------------------------------------


class KeysOrFixed:
    """API keys from a store; ``brief`` expires soon, ``forever`` never (no database)."""

    def __init__(self, store: PostgresKeyStore, *, brief_lifetime: float) -> None:
        self.store = store
        self.brief_lifetime = brief_lifetime
        self.expiry: dict[str, float] = {}

    def __call__(self, token: str, /) -> Identity:
        if token.startswith("wsk_"):
            return cast(Identity, self.store(token))
        if token == "brief":
            self.expiry[token] = time.time() + self.brief_lifetime
            return Identity(subject="brief", expires_at=self.expiry[token])
        if token == "forever":
            return Identity(subject="forever")
        raise InvalidToken("unknown_token")

    def revoked_after(self, position: int, /) -> tuple[list[str], int]:
        return cast("tuple[list[str], int]", self.store.revoked_after(position))

    def revocation_feed(self) -> object:
        return self.store.revocation_feed()

    def close_connection(self) -> None:
        self.store.close_connection()


class FrameReader:
    """Server frames off a raw socket, one at a time (bytes past a frame are kept)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _need(self, count: int, deadline: float) -> None:
        while len(self.buffer) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed without a Close frame")
            self.buffer += data

    def next(self, deadline: float) -> tuple[int, bytes]:
        self._need(2, deadline)
        opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if length == 126:
            self._need(4, deadline)
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        self._need(offset + length, deadline)
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def until_close(self, *, answer_pings: bool, timeout: float) -> tuple[int, float, int]:
        """Read until the Close frame: its code, when it came (time.time()), pings seen."""
        deadline = time.monotonic() + timeout
        pings = 0
        while True:
            opcode, payload = self.next(deadline)
            if opcode == 0x9:
                pings += 1
                if answer_pings:
                    self.sock.sendall(frame(0xA, payload))
            elif opcode == 0x8:
                return close_code(payload), time.time(), pings


def key_handshake(address: tuple[str, int], token: str, source_ip: str) -> tuple[int, float]:
    """One raw handshake with an API key: the status and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=10, source_address=(source_ip, 0)) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={token}"))
        status = parse_response(read_response(sock, timeout=10))[0]
    return status, time.monotonic() - started


def test_a_frozen_database_stalls_neither_expiry_nor_keepalive_and_recovers(
    pg: Cluster, logs: pytest.LogCaptureFixture
) -> None:
    (key, record), (other, _) = create(pg, "svc-a", "svc-b")
    verifier = KeysOrFixed(PostgresKeyStore(dsn(pg), query_timeout=1.0), brief_lifetime=3.0)
    verify_timeout, ping_interval, ping_timeout = 1.0, 0.5, 1.0
    app = make_app(
        verifier=verifier,
        verify_timeout=verify_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    watcher = watch(app, verifier)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=48)
    with (
        contextlib.ExitStack() as stack,
        running(app) as server,
        connect(f"{ws_url(server)}?token={key}", open_timeout=5) as keyed,
    ):
        assert keyed.recv(timeout=5) == WELCOME
        # The watch has asked once: it holds a connection to the server about to freeze.
        assert wait_for(lambda: watcher._position is not None, timeout=5)
        try:
            with pg.frozen():
                brief = FrameReader(stack.enter_context(open_raw_ws(server, "/ws?token=brief")))
                silent = FrameReader(stack.enter_context(open_raw_ws(server, "/ws?token=forever")))
                silent_opened = time.time()
                brief_done = pool.submit(brief.until_close, answer_pings=True, timeout=15)
                silent_done = pool.submit(silent.until_close, answer_pings=False, timeout=15)
                # More key handshakes than the verifier has threads, from 8 addresses.
                flood = [
                    pool.submit(key_handshake, server.address, other, f"127.0.0.{2 + n % 8}")
                    for n in range(40)
                ]
                for answer in flood:
                    status, took = answer.result(timeout=30)
                    assert status == 503
                    assert took < verify_timeout + 1.5
                code, closed_at, pings = brief_done.result(timeout=20)
                assert code == 1008 and pings >= 1
                assert closed_at - verifier.expiry["brief"] < 1.0  # on time, frozen or not
                code, closed_at, _ = silent_done.result(timeout=20)
                assert code == 1011  # a peer that answers no ping is still dropped on time
                assert closed_at - silent_opened < ping_interval + ping_timeout + 1.0
                refused = [
                    r
                    for r in logs.records
                    if "status=503 reason=verifier_timeout" in r.getMessage()
                ]
                assert len(refused) >= len(flood)  # the verifier said so, not a slot cap
                assert wait_for(lambda: revocation_warnings(logs), timeout=10)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        # Thawed: key handshakes succeed again, revocation closes resume.
        deadline = time.monotonic() + 15
        while (status := key_handshake(server.address, other, "127.0.0.1")[0]) != 101:
            assert status == 503 and time.monotonic() < deadline
        with connect(f"{ws_url(server)}?token={other}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
        assert revoke(pg, record.key_id)
        code, reason, _ = closed_with(keyed, timeout=MAX_BACKOFF + 10)
        assert (code, reason) == (1008, "credential revoked")
    assert_nothing_secret_logged(logs, key, other)


# -- the SQLite file ---------------------------------------------------------------------


def test_sqlite_store_and_its_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        store = SQLiteKeyStore(str(path))
        key, _ = store.create("svc-a")
        assert store(key).subject == "svc-a"
    finally:
        os.umask(old_umask)
    files = [path, tmp_path / "keys.db-wal", tmp_path / "keys.db-shm"]
    assert all(file.exists() for file in files)
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    store.close_connection()


def test_sqlite_store_warns_about_an_existing_readable_file(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.db"
    SQLiteKeyStore(str(path)).close_connection()
    path.chmod(0o644)
    SQLiteKeyStore(str(path)).close_connection()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # an operator's choice is kept
    assert [r.levelno for r in logs.records if "open to other users" in r.getMessage()] == [
        logging.WARNING
    ]
