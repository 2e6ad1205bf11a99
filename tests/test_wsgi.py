"""The WSGI middleware inside real threaded servers, each started as a separate process.

Werkzeug (plain and via Flask), gunicorn (gthread and sync workers), cheroot through its
gateway adapter, and the standard library's http.server through ``handle_request``.
Each runs one of the examples on a free loopback port.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import threading
import urllib.error
import urllib.request
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    SECRET,
    ServerProcess,
    frame,
    handshake_bytes,
    make_app,
    parse_response,
    read_101,
    read_frames,
    read_until_closed,
    running,
    wait_for,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import StaticTokens, WebSocketApp
from wsauth_sync.echo import echo
from wsauth_sync.wsgi import WebSocketMiddleware

ROOT = Path(__file__).resolve().parent.parent
SECOND = "another-token-value-77"


@dataclass(frozen=True)
class Host:
    name: str
    command: list[str]
    ready: str
    concurrent: bool = True


HOSTS = [
    Host(
        "werkzeug",
        [sys.executable, "-m", "examples.wsgi_echo"],
        r"Listening on http://127\.0\.0\.1:(\d+)",
    ),
    Host(
        "flask",
        [sys.executable, "-m", "examples.flask_echo"],
        r"Running on http://127\.0\.0\.1:(\d+)",
    ),
    Host(
        "gunicorn-gthread",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "40",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            "-",
            "examples.wsgi_echo:app",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    ),
    Host(
        "gunicorn-sync",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "sync",
            "-w",
            "2",
            "--timeout",
            "0",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            "-",
            "examples.wsgi_echo:app",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        concurrent=False,
    ),
    Host(
        "cheroot",
        [sys.executable, "-m", "examples.cheroot_echo"],
        r"Listening on http://127\.0\.0\.1:(\d+)",
    ),
    Host(
        "http.server",
        [sys.executable, "-m", "examples.stdlib_echo"],
        r"Listening on http://127\.0\.0\.1:(\d+)",
    ),
]


@dataclass
class Running:
    host: Host
    process: ServerProcess
    port: int

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module", params=HOSTS, ids=[host.name for host in HOSTS])
def host(request: pytest.FixtureRequest) -> Iterator[Running]:
    spec: Host = request.param
    process = ServerProcess(
        spec.command, cwd=str(ROOT), env={"WSAUTH_TOKENS": f"{SECRET},{SECOND}", "PORT": "0"}
    )
    try:
        port = int(process.expect(spec.ready).group(1))
        yield Running(spec, process, port)
    finally:
        code = process.stop()
    # Stopped cleanly: a normal exit, and nothing the host server called an error.
    assert code == 0, process.output
    assert "Traceback" not in process.output
    assert "Error handling request" not in process.output
    for form in (SECRET, SECOND):
        assert form not in process.output, "a token reached a log"


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read()


def test_valid_token_gets_welcome_and_echo(host: Running) -> None:
    with connect(f"{host.url()}?token={SECRET}", open_timeout=5) as ws:
        welcome = ws.recv(timeout=5)
        assert isinstance(welcome, str) and welcome.startswith("Welcome")
        ws.send("through the WSGI server")
        assert ws.recv(timeout=5) == "You said: through the WSGI server"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=5) == b"\x00\xffbin"
    assert wait_for(lambda: "accepted peer=127.0.0.1:" in host.process.output, 5)


def test_missing_and_invalid_tokens_get_401(host: Running) -> None:
    with pytest.raises(InvalidStatus) as missing:
        connect(host.url(), open_timeout=5)
    assert missing.value.response.status_code == 401
    assert missing.value.response.headers["WWW-Authenticate"] == 'Bearer realm="wsauth"'
    with pytest.raises(InvalidStatus) as invalid:
        connect(f"{host.url()}?token=not-{SECRET}", open_timeout=5)
    response = invalid.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="wsauth", error="invalid_token"'
    assert response.body == b"401 Unauthorized\n"
    assert wait_for(lambda: "reason=unknown_token" in host.process.output, 5)


def test_plain_http_is_still_served(host: Running) -> None:
    status, body = http_get(host.port)
    assert status == 200
    assert b"/ws" in body


def test_next_request_on_the_worker_is_served_after_a_websocket(host: Running) -> None:
    for _ in range(3):
        with connect(f"{host.url()}?token={SECOND}", open_timeout=5) as ws:
            ws.recv(timeout=5)
        assert http_get(host.port)[0] == 200


def test_thirty_concurrent_clients_while_http_is_served(host: Running) -> None:
    # gunicorn's sync worker serves one connection per worker process (2 here), and
    # plain requests wait for a free worker: the documented limit.
    count = 30 if host.host.concurrent else 2
    start = threading.Barrier(count, timeout=10)

    def client(n: int) -> int:
        with connect(f"{host.url()}?token={SECRET}", open_timeout=10) as ws:
            ws.recv(timeout=10)
            start.wait()  # all 30 are open at once
            for i in range(20):
                ws.send(f"{n}-{i}")
                assert ws.recv(timeout=10) == f"You said: {n}-{i}"
        return n

    with concurrent.futures.ThreadPoolExecutor(max_workers=count + 4) as pool:
        clients = [pool.submit(client, n) for n in range(count)]
        pages = [pool.submit(http_get, host.port) for _ in range(10)]
        assert sorted(f.result(timeout=60) for f in clients) == list(range(count))
        assert all(f.result(timeout=60)[0] == 200 for f in pages)


def test_query_token_never_reaches_an_access_log(host: Running) -> None:
    with connect(f"{host.url()}?token={SECRET}", open_timeout=5) as ws:
        ws.recv(timeout=5)
    with pytest.raises(InvalidStatus):
        connect(f"{host.url()}?token={SECOND}x", open_timeout=5)
    with pytest.raises(urllib.error.HTTPError):
        http_get(host.port, f"/ws?token={SECRET}")  # a plain GET: 426, logged by the host
    assert wait_for(lambda: host.process.output.count("rejected peer=") >= 2, 5)
    for form in (SECRET, SECOND):
        assert form not in host.process.output
    if host.host.name.startswith(("gunicorn", "werkzeug", "flask")):
        assert "token=[REDACTED]" in host.process.output  # the host logged the line


# -- in-process checks of the middleware itself ---------------------------------------------


def _serve_wsgi(app: object) -> tuple[wsgiref.simple_server.WSGIServer, threading.Thread]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread  # type: ignore[return-value]


def _ws_app() -> WebSocketApp:
    return make_app()


def _not_found(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])  # type: ignore[operator]
    return []


def _exchange(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout=5)


SAME_ANSWER_CASES = [
    handshake_bytes("/ws"),
    handshake_bytes("/ws?token=wrong"),
    handshake_bytes(f"/ws?token={SECRET}").replace(b"Version: 13", b"Version: 8"),
    handshake_bytes(f"/ws?token={SECRET}").replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    handshake_bytes(f"/ws?token={SECRET}", key="P5l8BJcZwRc="),
    handshake_bytes(
        "/ws",
        extra=f"Authorization: Bearer {SECRET}\r\nSec-WebSocket-Protocol: bearer, {SECRET}\r\n",
    ),
    handshake_bytes("/ws", extra="Authorization: Bearer \r\n"),
]


@pytest.mark.parametrize("data", SAME_ANSWER_CASES)
def test_middleware_and_socket_server_give_the_same_answer(data: bytes) -> None:
    relevant = (
        "www-authenticate",
        "upgrade",
        "sec-websocket-version",
        "content-type",
        "content-length",
        "retry-after",
        "allow",
    )
    with running() as socket_server:
        direct = parse_response(_exchange(socket_server.address[1], data))
    server, thread = _serve_wsgi(WebSocketMiddleware(_not_found, _ws_app()))
    try:
        via_wsgi = parse_response(_exchange(server.server_port, data))
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    assert direct[0] == via_wsgi[0]
    assert {k: v for k, v in direct[1].items() if k in relevant} == {
        k: v for k, v in via_wsgi[1].items() if k in relevant
    }
    assert direct[2] == via_wsgi[2]


def test_eager_first_frame_is_not_lost_under_werkzeug() -> None:
    import socket

    server, thread = _serve_wsgi(WebSocketMiddleware(_not_found, _ws_app()))
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(handshake_bytes(f"/ws?token={SECRET}") + frame(0x1, b"early"))
            read_101(sock)
            assert read_frames(sock, 2)[1] == (0x1, b"You said: early")
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_server_without_socket_access_is_refused_with_a_clear_error(
    logs: pytest.LogCaptureFixture,
) -> None:
    app = WebSocketMiddleware(
        _not_found, WebSocketApp({"/ws": echo}, verifier=StaticTokens([SECRET]))
    )
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = parse_response(
            _exchange(
                server.server_port,
                handshake_bytes("/ws", extra=f"Authorization: Bearer {SECRET}\r\n"),
            )
        )
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    assert status == 501
    assert body == b"501 Not Implemented\n"
    errors = [r.getMessage() for r in logs.records if r.levelname == "ERROR"]
    assert any(
        "WSGIServer" in message
        and "Werkzeug" in message
        and "gunicorn" in message
        and "cheroot" in message
        for message in errors
    )


def test_other_paths_pass_through_untouched() -> None:
    calls: list[str] = []

    def inner(environ: dict[str, object], start_response: object) -> list[bytes]:
        calls.append(str(environ["PATH_INFO"]))
        start_response("200 OK", [("Content-Length", "2")])  # type: ignore[operator]
        return [b"ok"]

    server, thread = _serve_wsgi(WebSocketMiddleware(inner, _ws_app()))
    try:
        assert http_get(server.server_port, "/other?token=x") == (200, b"ok")
        raw = _exchange(server.server_port, handshake_bytes(f"/ws/sub?token={SECRET}"))
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    assert calls == ["/other", "/ws/sub"]
    assert parse_response(raw)[0] == 200


def _connection_threads() -> int:
    # The verifier pool's few long-lived workers are not per-connection threads.
    return sum(not t.name.startswith("wsauth-verify") for t in threading.enumerate())


def test_no_worker_thread_outlives_its_websocket() -> None:
    server, thread = _serve_wsgi(WebSocketMiddleware(_not_found, _ws_app()))
    try:
        baseline = _connection_threads()
        with contextlib.ExitStack() as stack:
            for _ in range(5):
                ws = stack.enter_context(
                    connect(
                        f"ws://127.0.0.1:{server.server_port}/ws?token={SECRET}", open_timeout=5
                    )
                )
                ws.recv(timeout=5)
            assert _connection_threads() >= baseline + 5
        assert wait_for(lambda: _connection_threads() == baseline, 5)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_no_stray_bytes_after_the_close(host: Running) -> None:
    """After the WebSocket ends, the host server writes nothing more on the socket."""
    import socket

    with socket.create_connection(("127.0.0.1", host.port), timeout=5) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
        read_101(sock)
        assert read_frames(sock, 1)[0][0] == 0x1  # the welcome
        sock.sendall(frame(0x8, b"\x03\xe8"))  # we close: 1000
        opcode, payload = read_frames(sock, 1)[0]
        assert opcode == 0x8 and payload[:2] == b"\x03\xe8"
        assert read_until_closed(sock, timeout=5) == b""  # no "HTTP/1.1 ..." after the 101
