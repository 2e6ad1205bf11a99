"""API keys in a real SQLite file and a real PostgreSQL server, over real sockets."""

from __future__ import annotations

import concurrent.futures
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import handshake_bytes, make_app, parse_response, running, ws_url
from pg import postgres_dsn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import InvalidToken, ServiceUnavailable
from wsauth_sync.echo import WELCOME
from wsauth_sync.keystore import KeyStore, SQLiteKeyStore, open_keystore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        yield SQLiteKeyStore(str(tmp_path / "keys.db"))
    else:
        dsn = postgres_dsn(request)
        keys = open_keystore(dsn)
        with keys._cursor() as cursor:
            cursor.execute("DELETE FROM wsauth_keys")
        yield keys


def test_key_opens_a_connection_and_the_handler_sees_its_owner(store: KeyStore) -> None:
    key, record = store.create("service-a", scopes=["echo"])
    assert key.startswith(f"wsk_{record.key_id}_")
    with (
        running(make_app(verifier=store)) as server,
        connect(f"{ws_url(server)}?token={key}", open_timeout=5) as ws,
    ):
        assert ws.recv(timeout=5) == WELCOME
    used = store.records()[0]
    assert used.subject == "service-a" and used.scopes == ("echo",)
    assert used.last_used_at is not None


def test_only_the_hash_is_stored(store: KeyStore) -> None:
    key, record = store.create("service-a")
    with store._cursor() as cursor:
        cursor.execute("SELECT * FROM wsauth_keys")
        rows = cursor.fetchall()
    dump = repr(rows)
    assert record.key_id in dump
    assert key not in dump and key.split("_", 2)[2] not in dump  # the secret may hold "_"


@pytest.mark.parametrize(
    "token", ["wsk_000000000000_nope", "' OR 1=1 --", "wsk_' OR 1=1 --_x", "", "wsk__"]
)
def test_unknown_or_hostile_keys_are_401(store: KeyStore, token: str) -> None:
    store.create("service-a")
    with pytest.raises(InvalidToken):
        store(token)


def test_revoked_and_expired_keys_are_refused(store: KeyStore) -> None:
    key, record = store.create("service-a")
    old, _ = store.create("service-b", expires_at=time.time() - 1)
    assert store(key).subject == "service-a"
    assert store.revoke(record.key_id)
    assert not store.revoke(record.key_id)
    for token, reason in ((key, "revoked_key"), (old, "expired_key")):
        with pytest.raises(InvalidToken) as info:
            store(token)
        assert info.value.reason == reason


def test_many_threads_verify_at_once(store: KeyStore) -> None:
    keys = [store.create(f"svc-{n}")[0] for n in range(5)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        subjects = list(pool.map(lambda k: store(k).subject, keys * 40, timeout=60))
    assert sorted(set(subjects)) == [f"svc-{n}" for n in range(5)]


def test_revoking_a_key_closes_its_open_connections(store: KeyStore) -> None:
    key, record = store.create("service-a")
    other, _ = store.create("service-b")
    app = make_app(verifier=store, revocation_interval=0.2)
    with (
        running(app) as server,
        connect(f"{ws_url(server)}?token={key}", open_timeout=5) as doomed,
        connect(f"{ws_url(server)}?token={other}", open_timeout=5) as spared,
    ):
        assert doomed.recv(timeout=5) == WELCOME and spared.recv(timeout=5) == WELCOME
        store.revoke(record.key_id)
        with pytest.raises(ConnectionClosed) as info:
            doomed.recv(timeout=5)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "credential revoked")
        spared.send("unaffected")
        assert spared.recv(timeout=5) == "You said: unaffected"
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_url(server)}?token={key}", open_timeout=5)
        assert refused.value.response.status_code == 401


def test_required_scopes_per_path(store: KeyStore) -> None:
    from wsauth_sync.echo import echo

    admin, _ = store.create("root", scopes=["admin", "echo"])
    plain, _ = store.create("user", scopes=["echo"])
    app = make_app(
        verifier=store, routes={"/ws": echo, "/admin": echo}, required_scopes={"/admin": ["admin"]}
    )
    with running(app) as server:
        with connect(f"{ws_url(server, '/admin')}?token={admin}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
        with pytest.raises(InvalidStatus) as info:
            connect(f"{ws_url(server, '/admin')}?token={plain}", open_timeout=5)
        response = info.value.response
        assert response.status_code == 403
        assert (
            response.headers["WWW-Authenticate"]
            == 'Bearer realm="wsauth", error="insufficient_scope", scope="admin"'
        )
        with connect(f"{ws_url(server)}?token={plain}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME


def test_database_error_is_503(tmp_path: Path) -> None:
    store = SQLiteKeyStore(str(tmp_path / "keys.db"))
    key, _ = store.create("service-a")
    with contextlib.closing(sqlite3.connect(tmp_path / "keys.db")) as db:
        db.execute("DROP TABLE wsauth_keys")
    with pytest.raises(ServiceUnavailable) as info:
        store(key)
    assert info.value.reason == "keystore_error"
    with running(make_app(verifier=store)) as server:
        raw = handshake_bytes(f"/ws?token={key}")
        import socket

        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert parse_response(data)[0] == 503


# -- the keys command --------------------------------------------------------------------


def run_keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsauth_sync", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_keys_cli_create_list_revoke_and_serve(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from helpers import ServerProcess

    db = str(tmp_path / "keys.db") if backend == "sqlite" else postgres_dsn(request)
    created = run_keys("create", "billing-bot", "--scope", "echo", "--expires", "1h", "--db", db)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("wsk_")
    listing = run_keys("list", "--db", db)
    assert "billing-bot" in listing.stdout and "echo" in listing.stdout
    assert key not in listing.stdout
    key_id = key.split("_")[1]
    assert key_id in listing.stdout
    server = ServerProcess(
        [sys.executable, "-m", "wsauth_sync", "echo", "--port", "0", "--keys-db", db]
    )
    try:
        url = server.expect(r"Listening on (ws://\S+)").group(1)
        with connect(
            url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5
        ) as ws:
            assert ws.recv(timeout=5) == WELCOME
            revoked = run_keys("revoke", key_id, "--db", db)
            assert revoked.returncode == 0, revoked.stderr
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert "revoked" in run_keys("list", "--db", db).stdout
    finally:
        assert server.stop() == 0
    assert key not in server.output
    assert run_keys("revoke", "nosuchkey000", "--db", db).returncode == 1
