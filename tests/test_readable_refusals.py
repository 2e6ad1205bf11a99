"""Refusals a browser can read: 101 then Close 4401/4403/4429, over real sockets.

Each test plays a client on 127.0.0.1: raw bytes where the exact response matters, the
socket server and the WSGI middleware (Werkzeug) as the shells. The handler records its
calls: a readable refusal must never reach it, whatever the client sends.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator

import jwt
import pytest
from helpers import (
    KEY,
    SECRET,
    close_code,
    frame,
    handshake_bytes,
    make_app,
    parse_response,
    read_frames,
    read_until_closed,
    running,
    secret_forms,
    wait_for,
)

from wsauth_sync import (
    ConfigurationError,
    Identity,
    InvalidToken,
    JWTVerifier,
    QueryToken,
    StaticTokens,
    SubprotocolToken,
    WebSocket,
    WebSocketApp,
    WebSocketServer,
)
from wsauth_sync.guards import FailedAuthLimiter

ORIGIN = "http://app.example"
BROWSER = f"Origin: {ORIGIN}\r\n"
JWT_SECRET = "a-jwt-secret-that-is-at-least-32-bytes!"


class Recorder:
    """A handler that records every call (and echoes, should it ever run)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, ws: WebSocket) -> None:
        self.calls.append(ws.identity.subject)
        for message in ws:
            self.calls.append(f"message {message!r}")


def readable_app(recorder: Recorder, **overrides: object) -> WebSocketApp:
    options: dict[str, object] = {
        "routes": {"/ws": recorder, "/plain": recorder},
        "readable_refusals": {"/ws"},
    }
    options.update(overrides)
    return make_app(**options)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[WebSocketServer]:
    with running(readable_app(recorder)) as srv:
        yield srv


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed during the head: {head!r}")
        head += chunk
    return head


def refused(
    server: WebSocketServer, target: str = "/ws", *, extra: str = BROWSER, after_head: bytes = b""
) -> tuple[int, dict[str, str], int, str]:
    """Handshake; return the status, headers, and the close code and reason that follow.

    ``after_head`` goes out in the same write as the head (an eager frame); the client
    then sends a text message as soon as the 101 is in, and answers the Close.
    """
    with socket.create_connection(server.address, timeout=3) as sock:
        sock.sendall(handshake_bytes(target, extra=extra) + after_head)
        head = read_head(sock)
        if not head.startswith(b"HTTP/1.1 101 "):
            status, headers, _ = parse_response(head + read_until_closed(sock))
            return status, headers, 0, ""
        status, headers, _ = parse_response(head)
        sock.sendall(frame(0x1, b"sent right after open"))
        ((opcode, payload),) = read_frames(sock, 1)
        assert opcode == 0x8
        sock.sendall(frame(0x8, payload[:2]))
        assert read_until_closed(sock) == b""  # nothing after the Close, then TCP ends
        return status, headers, close_code(payload), payload[2:].decode()


def expected_accept(key: str = KEY) -> str:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def rejected_lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.getMessage().startswith("rejected")]


def test_bad_token_from_a_browser_gets_101_then_close_4401(
    server: WebSocketServer, recorder: Recorder, logs: pytest.LogCaptureFixture
) -> None:
    status, headers, code, reason = refused(
        server, "/ws?token=wrong-token", after_head=frame(0x1, b"eager")
    )
    assert (status, code, reason) == (101, 4401, "unauthorized: invalid")
    assert headers["sec-websocket-accept"] == expected_accept()
    assert "sec-websocket-protocol" not in headers
    assert wait_for(
        lambda: any("delivered=close code=4401" in line for line in rejected_lines(logs))
    )
    (line,) = rejected_lines(logs)
    assert "status=401 reason=unknown_token" in line and f"origin={ORIGIN}" in line
    assert "wrong-token" not in line
    assert recorder.calls == []  # no handler, no message delivered
    assert not any(r.getMessage().startswith(("accepted", "closed")) for r in logs.records)


def test_missing_token_says_missing(server: WebSocketServer) -> None:
    assert refused(server)[2:] == (4401, "unauthorized: missing")


def test_client_without_origin_keeps_the_http_401(
    server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    status, headers, _, _ = refused(server, "/ws?token=wrong", extra="")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="wsauth", error="invalid_token"'
    assert wait_for(lambda: rejected_lines(logs))
    assert "delivered" not in rejected_lines(logs)[0]


def test_paths_not_opted_in_keep_the_http_status(server: WebSocketServer) -> None:
    assert refused(server, "/plain?token=wrong")[0] == 401


@pytest.mark.parametrize(
    ("target", "extra", "status"),
    [
        ("/nope?token=wrong", BROWSER, 404),
        ("/ws?token=wrong", BROWSER + "Sec-WebSocket-Version: 8\r\n", 400),
        ("/ws?token=a&token=b", BROWSER, 400),
        ("/ws?token=wrong", "Origin: http://a.example\r\nOrigin: http://b.example\r\n", 400),
    ],
)
def test_refusals_not_about_the_credential_keep_their_status(
    server: WebSocketServer, target: str, extra: str, status: int
) -> None:
    assert refused(server, target, extra=extra)[0] == status


def test_the_token_subprotocol_is_never_selected_the_carrier_is(server: WebSocketServer) -> None:
    status, headers, code, _ = refused(
        server, extra=BROWSER + "Sec-WebSocket-Protocol: bearer, not-the-token\r\n"
    )
    assert (status, code) == (101, 4401)
    assert headers["sec-websocket-protocol"] == "bearer"


def test_offered_subprotocols_none_selectable_keep_the_http_401(server: WebSocketServer) -> None:
    # A browser would fail a 101 that selects none of its offers: no point sending one.
    assert (
        refused(server, "/ws?token=wrong", extra=BROWSER + "Sec-WebSocket-Protocol: chat\r\n")[0]
        == 401
    )
    # A token entry alone with nothing to select is a malformed request (400) anyway.
    encoded = "base64url.bearer." + base64.urlsafe_b64encode(b"nope").decode().rstrip("=")
    assert refused(server, extra=BROWSER + f"Sec-WebSocket-Protocol: {encoded}\r\n")[0] == 400


def test_the_apps_own_subprotocol_is_selected_first(recorder: Recorder) -> None:
    encoded = "base64url.bearer." + base64.urlsafe_b64encode(b"nope").decode().rstrip("=")
    with running(readable_app(recorder, subprotocols=["chat"])) as srv:
        for offer in ("chat", f"{encoded}, chat", "bearer, not-it, chat"):
            status, headers, code, _ = refused(
                srv, "/ws", extra=BROWSER + f"Sec-WebSocket-Protocol: {offer}\r\n"
            )
            assert (status, code, headers["sec-websocket-protocol"]) == (101, 4401, "chat")


def test_expired_jwt_says_expired_and_forged_says_invalid(recorder: Recorder) -> None:
    verifier = JWTVerifier(key=JWT_SECRET, algorithms=["HS256"], leeway=0)
    app = readable_app(recorder, verifier=verifier)
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 60}, JWT_SECRET)
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "x" * 40)
    with running(app) as srv:
        assert refused(srv, f"/ws?token={expired}")[2:] == (4401, "unauthorized: expired")
        assert refused(srv, f"/ws?token={forged}")[2:] == (4401, "unauthorized: invalid")
    assert recorder.calls == []


def test_a_verifiers_own_reason_never_reaches_the_client(recorder: Recorder) -> None:
    def verifier(token: str) -> Identity:
        raise InvalidToken(f"bad {token}")  # a careless custom verifier

    with running(readable_app(recorder, verifier=verifier)) as srv:
        assert refused(srv, "/ws?token=leaky")[2:] == (4401, "unauthorized: invalid")


def test_missing_scope_gets_4403_but_a_foreign_origin_keeps_403(recorder: Recorder) -> None:
    app = readable_app(recorder, required_scopes={"/ws": ["admin"]}, allowed_origins=[ORIGIN])
    with running(app) as srv:
        assert refused(srv, f"/ws?token={SECRET}")[2:] == (4403, "forbidden: insufficient_scope")
        status, _, _, _ = refused(
            srv, f"/ws?token={SECRET}", extra="Origin: http://evil.example\r\n"
        )
        assert status == 403
    assert recorder.calls == []


def test_limiter_counts_readable_refusals_like_http_ones(
    recorder: Recorder, logs: pytest.LogCaptureFixture
) -> None:
    app = readable_app(recorder, limiter=FailedAuthLimiter(rate=0.01, burst=20))
    with running(app) as srv:
        # Half the failures as browsers (Close 4401), half as plain clients (HTTP 401).
        for attempt in range(20):
            outcome = refused(srv, "/ws?token=wrong", extra=BROWSER if attempt % 2 else "")
            assert outcome[0] == (101 if attempt % 2 else 401)
        status, _, code, reason = refused(srv, "/ws?token=wrong")  # the 21st
        assert (status, code) == (101, 4429)
        assert re.fullmatch(r"too many attempts; retry in (9[0-9]|100) s", reason)
        assert refused(srv, "/ws?token=wrong", extra="")[0] == 429
        assert refused(srv, f"/ws?token={SECRET}")[2] == 4429  # even a good token waits
    assert wait_for(
        lambda: any("status=429" in line and "code=4429" in line for line in rejected_lines(logs))
    )
    assert recorder.calls == []


def test_caps_are_not_consumed_by_readable_refusals(recorder: Recorder) -> None:
    app = readable_app(recorder, max_connections_per_ip=1, max_connections_per_identity=1)
    with running(app) as srv:
        # Clients that never answer the Close hold their refusals open meanwhile.
        held = []
        for _ in range(3):
            sock = socket.create_connection(srv.address, timeout=3)
            sock.sendall(handshake_bytes("/ws?token=wrong", extra=BROWSER))
            assert read_head(sock).startswith(b"HTTP/1.1 101 ")
            held.append(sock)
        try:
            with socket.create_connection(srv.address, timeout=3) as good:
                good.sendall(handshake_bytes(f"/ws?token={SECRET}"))
                assert read_head(good).startswith(b"HTTP/1.1 101 ")
                assert wait_for(lambda: recorder.calls == ["alice"])
        finally:
            for sock in held:
                sock.close()


def test_a_client_that_never_closes_or_floods_is_cut_off(
    server: WebSocketServer, recorder: Recorder
) -> None:
    with (
        socket.create_connection(server.address, timeout=5) as quiet,
        socket.create_connection(server.address, timeout=5) as flood,
    ):
        for sock in (quiet, flood):
            sock.sendall(handshake_bytes("/ws?token=wrong", extra=BROWSER))
            read_head(sock)
        stop = threading.Event()

        def pour() -> None:
            chunk = frame(0x2, b"x" * 60000)
            while not stop.is_set():
                try:
                    flood.sendall(chunk)
                except OSError:
                    return

        pourer = threading.Thread(target=pour)
        pourer.start()
        try:
            started = time.monotonic()
            read_until_closed(quiet, timeout=5)
            assert time.monotonic() - started < 4  # the 1 s bound, with a wide margin
            read_until_closed(flood, timeout=5)
        finally:
            stop.set()
            pourer.join(5)
    assert recorder.calls == []


def test_no_token_form_reaches_any_log(
    server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    refused(server, f"/ws?token={SECRET}x")
    refused(server, extra=BROWSER + f"Sec-WebSocket-Protocol: bearer, {SECRET}y\r\n")
    assert wait_for(lambda: len(rejected_lines(logs)) == 2)
    text = "\n".join(r.getMessage() for r in logs.records)
    assert not any(form in text for form in secret_forms())


def test_readable_refusals_must_name_routes() -> None:
    for bad in (["/other"], "/ws"):
        with pytest.raises(ConfigurationError):
            WebSocketApp(
                {"/ws": Recorder()}, verifier=StaticTokens([SECRET]), readable_refusals=bad
            )


def test_wsgi_middleware_gives_the_same_readable_refusal(
    recorder: Recorder, logs: pytest.LogCaptureFixture
) -> None:
    from werkzeug.serving import make_server

    from wsauth_sync.wsgi import WebSocketMiddleware

    def fallback(environ: object, start_response: object) -> list[bytes]:
        raise AssertionError("the WebSocket path never reaches the wrapped app")

    app = readable_app(recorder, sources=[QueryToken(), SubprotocolToken()])
    httpd = make_server("127.0.0.1", 0, WebSocketMiddleware(fallback, app), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:

        class Address:
            address = ("127.0.0.1", httpd.server_port)

        target = Address()
        status, headers, code, reason = refused(
            target,  # type: ignore[arg-type]
            "/ws",
            extra=BROWSER + "Sec-WebSocket-Protocol: bearer, wrong-one\r\n",
        )
        assert (status, code, reason) == (101, 4401, "unauthorized: invalid")
        assert headers["sec-websocket-protocol"] == "bearer"
        assert refused(target, "/ws?token=wrong", extra="")[0] == 401  # type: ignore[arg-type]
    finally:
        httpd.shutdown()
        thread.join(5)
    assert any(
        "status=401" in line and "delivered=close code=4401" in line
        for line in rejected_lines(logs)
    )
    assert recorder.calls == []
