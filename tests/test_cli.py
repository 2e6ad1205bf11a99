"""The ``wsauth-sync echo`` command, run as a real subprocess on a free loopback port.

Each flag's effect is checked through the command, as a user meets it: the printed
instructions are followed literally, and a flag that stopped working fails a test here.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from helpers import (
    SECRET,
    ServerProcess,
    free_port,
    handshake_bytes,
    read_frames,
    read_head,
    read_until_closed,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync.echo import WELCOME

#: Secrets in the environment would change what the command does: start without them.
CLEAN_ENV = {"WSAUTH_TOKENS": "", "WSAUTH_JWT_SECRET": "", "WSAUTH_KEYS_DB": ""}
CLI = [sys.executable, "-m", "wsauth_sync"]


@contextlib.contextmanager
def echo_command(
    *args: str, program: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    command = (program or CLI) + ["echo", *args]
    if "--port" not in args:
        command += ["--port", "0"]
    running = ServerProcess(command, env={**CLEAN_ENV, **(env or {})})
    try:
        running.expect("^Press Ctrl-C to stop")  # the last start-up line
        yield running
    finally:
        running.stop()


def listening(server: ServerProcess) -> str:
    return next(line for line in server.lines if line.startswith("Listening on ")).split()[-1]


def hints(server: ServerProcess) -> list[str]:
    """The ``Connect with:`` lines of the start-up output."""
    return [
        line[len("Connect with: ") :] for line in server.lines if line.startswith("Connect with: ")
    ]


def follow(hint: str) -> str:
    """Connect exactly as one printed hint says; returns the first message."""
    match = re.fullmatch(
        r'(\S+)(?: \+ (header|subprotocols|cookie) "([^"]*)")?'
        r'(?: \+ Origin "([^"]*)")?',
        hint,
    )
    assert match, hint
    url, kind, value, origin = match.groups()
    if kind == "cookie":
        import websocket as wsclient

        ws = wsclient.create_connection(url, cookie=value, origin=origin, timeout=5)
        try:
            return str(ws.recv())
        finally:
            ws.close()
    options: dict[str, object] = {}
    if kind == "header":
        name, _, header_value = value.partition(": ")
        options["additional_headers"] = {name: header_value}
    elif kind == "subprotocols":
        options["subprotocols"] = value.split(", ")
    with connect(url, open_timeout=5, **options) as ws:  # type: ignore[call-overload]
        return str(ws.recv(timeout=5))


def test_each_printed_hint_connects_with_the_demo_token() -> None:
    with echo_command() as server:
        lines = hints(server)
        assert len(lines) == 3  # query, bearer header, subprotocols: the default sources
        for hint in lines:
            assert follow(hint) == WELCOME
        url = listening(server)
        with pytest.raises(InvalidStatus) as info:
            connect(url, open_timeout=5)
        assert info.value.response.status_code == 401
        demo_token = lines[0].split("?token=", 1)[1]
        assert len(demo_token) >= 32
        assert any(
            line.startswith("Browser demo: http://127.0.0.1:")
            and line.endswith(f"/#token={demo_token}")
            for line in server.lines
        )
    assert server.process.returncode == 0
    # The token is printed on purpose in the hints; the log lines never show it.
    log = [line for line in server.lines if " INFO " in line or " WARNING " in line]
    assert any("accepted peer=127.0.0.1:" in line for line in log)
    assert any("reason=missing_token" in line for line in log)
    assert not any(demo_token in line for line in log)


def test_bearer_only_prints_the_header_and_no_demo_page() -> None:
    with echo_command("--source", "bearer") as server:
        (hint,) = hints(server)
        assert "?token=" not in server.output
        assert hint.startswith(listening(server) + ' + header "Authorization: Bearer ')
        assert follow(hint) == WELCOME
        assert "Browser demo" not in server.output
        status, _ = http_get(listening(server), "/")  # no page the browser could not use
        assert status != 200


def test_cookie_hint_and_a_demo_page_only_for_an_allowed_page_origin() -> None:
    with echo_command("--source", "cookie", "--allow-origin", "https://app.example") as server:
        (hint,) = hints(server)
        assert hint.endswith('+ Origin "https://app.example"')
        assert follow(hint) == WELCOME
        assert "Browser demo" not in server.output  # the page's own origin would get 403
    port = free_port()
    with echo_command(
        "--port",
        str(port),
        "--source",
        "cookie",
        "--source",
        "query",
        "--allow-origin",
        f"http://127.0.0.1:{port}",
    ) as server:
        assert len(hints(server)) == 2
        demo = next(line for line in server.lines if line.startswith("Browser demo: "))
        assert demo.startswith(f"Browser demo: http://127.0.0.1:{port}/#token=")
        status, page = http_get(listening(server), "/")
        assert status == 200 and b'const SOURCES = ["query", "cookie"];' in page


def http_get(ws_url: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{ws_url.split('/')[2]}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_favicon_is_answered_without_a_refusal() -> None:
    with echo_command() as server:
        hints(server)
        status, body = http_get(listening(server), "/favicon.ico")
        assert (status, body) == (200, b"")
        server.expect("served .*path=/favicon.ico")
    assert not [line for line in server.lines if "rejected" in line]


def test_static_tokens_path_source_and_message_size() -> None:
    with echo_command(
        "--token",
        SECRET,
        "--token",
        "second-token-value",
        "--path",
        "/chat",
        "--source",
        "bearer",
        "--max-message-size",
        "100",
    ) as server:
        url = listening(server)
        assert url.endswith("/chat")
        with connect(
            url, additional_headers={"Authorization": "Bearer second-token-value"}, open_timeout=5
        ) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("x" * 100)
            assert ws.recv(timeout=5) == "You said: " + "x" * 100
            ws.send("x" * 101)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        with pytest.raises(InvalidStatus) as refused:  # query source not enabled
            connect(f"{url}?token={SECRET}", open_timeout=5)
        assert refused.value.response.status_code == 401
        assert hints(server) == [f'{url} + header "Authorization: Bearer TOKEN"']
    assert all(SECRET not in line for line in server.lines)


def test_host_and_port_flags() -> None:
    port = free_port()
    with echo_command("--host", "127.0.0.2", "--port", str(port), "--token", SECRET) as server:
        assert listening(server) == f"ws://127.0.0.2:{port}/ws"
        with connect(f"ws://127.0.0.2:{port}/ws?token={SECRET}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_jwt_secret_audience_issuer_and_algorithm() -> None:
    secret = "j" * 48
    claims = {"sub": "carol", "exp": int(time.time()) + 60, "aud": "echo", "iss": "idp"}
    with echo_command(
        "--jwt-secret",
        secret,
        "--jwt-audience",
        "echo",
        "--jwt-issuer",
        "idp",
        "--jwt-algorithm",
        "HS384",
    ) as server:
        url = listening(server)
        good = jwt.encode(claims, secret, algorithm="HS384")
        with connect(
            url,
            subprotocols=["bearer", good],  # type: ignore[list-item]
            open_timeout=5,
        ) as ws:
            assert ws.subprotocol == "bearer"
            assert ws.recv(timeout=5) == WELCOME
        for bad in (
            jwt.encode(claims, secret, algorithm="HS256"),
            jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS384"),
            jwt.encode({**claims, "iss": "evil"}, secret, algorithm="HS384"),
        ):
            with pytest.raises(InvalidStatus) as info:
                connect(f"{url}?token={bad}", open_timeout=5)
            assert info.value.response.status_code == 401
    assert any("subject=carol" in line for line in server.lines)


def test_jwt_public_key_and_jwks_url(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "issuer.pem").write_bytes(pem)
    token = jwt.encode(
        {"sub": "dave", "exp": int(time.time()) + 60},
        private,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with (
        echo_command(
            "--jwt-public-key", str(tmp_path / "issuer.pem"), "--jwt-algorithm", "ES256"
        ) as server,
        connect(f"{listening(server)}?token={token}", open_timeout=5) as ws,
    ):
        assert ws.recv(timeout=5) == WELCOME
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    with (
        jwks_server({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}) as jwks_url,
        echo_command("--jwks-url", jwks_url, "--jwt-algorithm", "ES256") as server,
    ):
        with connect(f"{listening(server)}?token={token}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
        forged = jwt.encode(
            {"sub": "dave", "exp": int(time.time()) + 60},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        with pytest.raises(InvalidStatus) as info:
            connect(f"{listening(server)}?token={forged}", open_timeout=5)
        assert info.value.response.status_code == 401


@contextlib.contextmanager
def jwks_server(document: dict[str, object]) -> Iterator[str]:
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cookie_source_with_origin_allowlist() -> None:
    import websocket as wsclient

    with echo_command(
        "--token", SECRET, "--source", "cookie", "--allow-origin", "https://app.example"
    ) as server:
        url = listening(server)
        ws = wsclient.create_connection(
            url, cookie=f"token={SECRET}", origin="https://app.example", timeout=5
        )
        try:
            assert ws.recv() == WELCOME
        finally:
            ws.close()
        with pytest.raises(wsclient.WebSocketBadStatusException) as info:
            wsclient.create_connection(
                url, cookie=f"token={SECRET}", origin="https://evil.example", timeout=5
            )
        assert info.value.status_code == 403
    assert any("reason=origin_not_allowed" in line for line in server.lines)


def refusal_statuses(url: str, count: int) -> list[int]:
    host, port = url.split("/")[2].split(":")
    statuses = []
    for _ in range(count):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(handshake_bytes("/ws?token=wrong-token"))
            statuses.append(int(read_until_closed(sock, timeout=5).split(b" ", 2)[1]))
    return statuses


@pytest.mark.parametrize("flags", [(), ("--no-rate-limit",)])
def test_failed_auth_limiter_and_no_rate_limit(flags: tuple[str, ...]) -> None:
    with echo_command("--token", SECRET, *flags) as server:
        statuses = refusal_statuses(listening(server), 25)
    if flags:
        assert statuses == [401] * 25
    else:
        assert statuses[:20] == [401] * 20 and 429 in statuses[20:]


def test_handshake_timeout_flag() -> None:
    with echo_command("--token", SECRET, "--handshake-timeout", "0.5") as server:
        host, port = listening(server).split("/")[2].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\n")  # then silence
            # The default deadline is 10 s; with the flag the 408 comes at about 0.5 s.
            assert read_until_closed(sock, timeout=5).startswith(b"HTTP/1.1 408 ")


def test_max_connections_flag() -> None:
    with echo_command("--token", SECRET, "--max-connections", "1") as server:
        url = f"{listening(server)}?token={SECRET}"
        with connect(url, open_timeout=5) as first:
            assert first.recv(timeout=5) == WELCOME
            # A raw client: a refused websockets client object can leave a thread behind
            # that trips over its closed socket and disturbs the next connection.
            host, port = url.split("/")[2].split(":")
            with socket.create_connection((host, int(port)), timeout=5) as refused:
                refused.sendall(handshake_bytes(f"/ws?token={SECRET}"))
                assert read_until_closed(refused, timeout=5).startswith(
                    b"HTTP/1.1 503 Service Unavailable\r\n"
                )
        # The slot frees once the server has ended the first connection, a moment after
        # the client saw it end: 503 until then, then a 101 and the welcome.
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection((host, int(port)), timeout=5) as again:
                again.sendall(handshake_bytes(f"/ws?token={SECRET}"))
                head = read_head(again)
                if head.startswith(b"HTTP/1.1 101 "):
                    assert read_frames(again, 1, timeout=5) == [(1, WELCOME.encode())]
                    break
            assert head.startswith(b"HTTP/1.1 503 ") and time.monotonic() < deadline, head
            time.sleep(0.05)


def test_console_script_runs_the_same_server() -> None:
    # pip puts the script beside the interpreter, whether or not that is on PATH.
    program = Path(sys.executable).parent / "wsauth-sync"
    assert program.exists(), "the README's install step provides the console script"
    with (
        echo_command("--token", SECRET, program=[str(program)]) as server,
        connect(f"{listening(server)}?token={SECRET}", open_timeout=5) as ws,
    ):
        assert ws.recv(timeout=5) == WELCOME
