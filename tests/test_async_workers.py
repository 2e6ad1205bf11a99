"""The WSGI middleware under green threads: gunicorn ``-k gevent``, gevent's pywsgi, eventlet.

Each server runs ``tests/green_app.py`` as a separate, monkey-patched process. The blocking
WebSocket must cooperate with the hub: one worker holds 200 open WebSockets, each
echoing, while plain HTTP requests are served; the shared timer thread (a greenlet once
patched) still sends keepalive pings, closes on credential expiry and on revocation, on
time; after the WebSocket the host writes nothing more and logs no error.

gunicorn 26 deprecated and 27 removed its eventlet worker (``-k eventlet``), so eventlet
is tested with its own ``eventlet.wsgi.server``.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from helpers import (
    SECRET,
    ServerProcess,
    close_code,
    frame,
    handshake_bytes,
    read_101,
    read_frames,
    read_until_closed,
    wait_for,
)
from needs import require_installed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsauth_sync.echo import WELCOME
from wsauth_sync.keystore import SQLiteKeyStore

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
JWT_SECRET = "green-thread-test-secret-of-32-bytes-or-more"
PING = 1.0  # keepalive interval and timeout on /jwt and /keys
OPEN_WEBSOCKETS = 200


@dataclass(frozen=True)
class GreenHost:
    name: str
    command: list[str]
    ready: str
    needs: tuple[str, ...]


GREEN_HOSTS = [
    GreenHost(
        "gunicorn-gevent",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "1",
            "--worker-connections",
            "1000",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            "-",
            "--pythonpath",
            str(TESTS),
            "green_app:app",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        ("gevent",),
    ),
    GreenHost(
        "gevent-pywsgi",
        [sys.executable, str(TESTS / "green_app.py"), "gevent"],
        r"Listening on http://127\.0\.0\.1:(\d+)",
        ("gevent",),
    ),
    GreenHost(
        "eventlet",
        [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            str(TESTS / "green_app.py"),
            "eventlet",
        ],
        r"Listening on http://127\.0\.0\.1:(\d+)",
        ("eventlet",),
    ),
]


@dataclass
class Served:
    process: ServerProcess
    port: int
    keys: SQLiteKeyStore


@pytest.fixture(scope="module")
def keys_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("keys") / "keys.db")


def serve(command: list[str], ready: str, keys_db: str) -> Iterator[Served]:
    """Run ``command`` serving green_app; stop it and check its output afterwards."""
    keys = SQLiteKeyStore(keys_db)  # creates the table before the server opens it
    process = ServerProcess(
        command,
        cwd=str(ROOT),
        env={
            "WSAUTH_TOKENS": SECRET,
            "WSAUTH_JWT_SECRET": JWT_SECRET,
            "WSAUTH_KEYS_DB": keys_db,
            "WSAUTH_PING": str(PING),
            "PORT": "0",
        },
    )
    try:
        yield Served(process, int(process.expect(ready, timeout=30).group(1)), keys)
    finally:
        code = process.stop()
    assert code == 0, process.output
    for bad in ("Traceback", "Error handling request", SECRET):
        assert bad not in process.output, process.output[-3000:]


@pytest.fixture(scope="module", params=GREEN_HOSTS, ids=[h.name for h in GREEN_HOSTS])
def green(request: pytest.FixtureRequest, keys_db: str) -> Iterator[Served]:
    spec: GreenHost = request.param
    for name in spec.needs:
        require_installed(name)
    yield from serve(spec.command, spec.ready, keys_db)


# -- a raw client that sees every frame -------------------------------------------------


def open_ws(port: int, target: str, timeout: float = 10.0) -> socket.socket:
    """A socket past the 101 and the welcome message."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(handshake_bytes(target))
    read_101(sock)
    assert read_frames(sock, 1, timeout)[0] == (0x1, WELCOME.encode())
    return sock


def wait_close(
    sock: socket.socket,
    timeout: float,
    *,
    pong: bool = True,
) -> tuple[int, str, float, int]:
    """Read frames until the server's Close: (code, reason, when, pings seen).

    ``pong=False`` plays a peer that stopped answering keepalive pings. Reads one frame
    at a time, so a Ping and the Close in one segment are both seen.
    """
    deadline = time.monotonic() + timeout
    pings = 0
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        first, second = _exactly(sock, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", _exactly(sock, 2))[0]
        payload = _exactly(sock, length)
        opcode = first & 0x0F
        if opcode == 0x8:
            return close_code(payload), payload[2:].decode(), time.monotonic(), pings
        if opcode == 0x9:
            pings += 1
            if pong:
                sock.sendall(frame(0xA, payload))


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed before the Close frame")
        data += chunk
    return data


def http_get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return int(response.status)


# -- the checks, shared with test_uwsgi.py ------------------------------------------------


def check_echo_and_refusals(served: Served) -> None:
    with connect(f"ws://127.0.0.1:{served.port}/ws?token={SECRET}", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == WELCOME
        ws.send("green")
        assert ws.recv(timeout=10) == "You said: green"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{served.port}/ws?token=wrong", open_timeout=10)
    assert refused.value.response.status_code == 401
    assert (
        refused.value.response.headers["WWW-Authenticate"]
        == 'Bearer realm="wsauth", error="invalid_token"'
    )
    assert http_get(served.port) == 200
    assert wait_for(lambda: "reason=unknown_token" in served.process.output, 5)


def check_nothing_after_the_close(served: Served) -> None:
    with open_ws(served.port, f"/ws?token={SECRET}") as sock:
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        assert wait_close(sock, 10)[0] == 1000
        assert read_until_closed(sock, timeout=10) == b""  # no HTTP response after the 101
    assert http_get(served.port) == 200


def check_timers(served: Served) -> None:
    """Keepalive, expiry and revocation on three connections open at once."""
    now = time.time()
    expires = int(now) + 3
    token = jwt.encode({"sub": "carol", "exp": expires}, JWT_SECRET, algorithm="HS256")
    long_lived = jwt.encode({"sub": "erin", "exp": int(now) + 600}, JWT_SECRET, algorithm="HS256")
    key, record = served.keys.create("dave")
    with (
        open_ws(served.port, f"/jwt?token={token}") as expiring,
        open_ws(served.port, f"/jwt?token={long_lived}") as silent,
        open_ws(served.port, f"/keys?token={key}") as revoked,
    ):
        assert served.keys.revoke(record.key_id)
        revoked_at = time.monotonic()
        code, reason, when, _ = wait_close(revoked, 10)
        assert (code, reason) == (1008, "credential revoked")
        assert when - revoked_at < 0.5 + 3.0  # one revocation interval, and a margin
        code, reason, when, _ = wait_close(expiring, 15)
        assert (code, reason) == (1008, "credential expired")
        late = time.time() - expires
        assert -0.5 < late < 3.0, late  # at exp (leeway 0), not long after
        code, reason, _, pings = wait_close(silent, 15, pong=False)
        assert (code, reason) == (1011, "keepalive ping timeout")
        assert pings >= 1


def check_many_open_websockets(served: Served, count: int = OPEN_WEBSOCKETS) -> None:
    """``count`` WebSockets open on one worker, each echoing, while HTTP is served."""
    sockets: list[socket.socket] = []
    try:
        for n in range(count):
            sockets.append(open_ws(served.port, f"/ws?token={SECRET}"))
            if n % 50 == 49:
                assert http_get(served.port) == 200
        for n, sock in enumerate(sockets):
            sock.sendall(frame(0x1, f"m{n}".encode()))
        for n, sock in enumerate(sockets):
            assert read_frames(sock, 1, 10)[0] == (0x1, f"You said: m{n}".encode())
        assert all(http_get(served.port) == 200 for _ in range(5))
        for sock in sockets:
            sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        for sock in sockets:
            assert wait_close(sock, 10)[0] == 1000
    finally:
        for sock in sockets:
            sock.close()
    assert wait_for(lambda: served.process.output.count("closed peer=") >= count, 15)


# -- the tests --------------------------------------------------------------------------


def test_echo_refusals_and_plain_http(green: Served) -> None:
    check_echo_and_refusals(green)


def test_host_writes_nothing_after_the_websocket(green: Served) -> None:
    check_nothing_after_the_close(green)


def test_keepalive_expiry_and_revocation_fire_on_time(green: Served) -> None:
    check_timers(green)


def test_one_worker_holds_200_websockets_while_http_is_served(green: Served) -> None:
    check_many_open_websockets(green)
