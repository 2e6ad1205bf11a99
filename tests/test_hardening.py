"""Hostile input over real sockets: origins, limits, slow clients, floods, bad frames.

Attackers connect from 127.0.0.2 (still loopback) so that per-address limits can be
shown to spare the well-behaved client on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from helpers import (
    SECRET,
    close_code,
    connect_raw,
    frame,
    handshake_bytes,
    make_app,
    open_raw_ws,
    parse_response,
    read_frames,
    read_head,
    read_until_closed,
    running,
    wait_for,
    ws_url,
)
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.sync.client import connect

from wsauth_sync import (
    ConfigurationError,
    CookieToken,
    Identity,
    InvalidToken,
    QueryToken,
    WebSocket,
    WebSocketApp,
    WebSocketServer,
)
from wsauth_sync.echo import WELCOME, echo
from wsauth_sync.guards import FailedAuthLimiter

ATTACKER = "127.0.0.2"
APP_ORIGIN = "https://app.example.com"


def welcome_then_echo(server: WebSocketServer, text: str = "ping") -> None:
    """A well-behaved client: connect, read the welcome, one echo."""
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
        assert ws.recv(timeout=3) == WELCOME
        ws.send(text)
        assert ws.recv(timeout=3) == f"You said: {text}"


def status_of(
    server: WebSocketServer, target: str = f"/ws?token={SECRET}", extra: str = ""
) -> tuple[int, dict[str, str]]:
    """Status and headers of the answer to one handshake (a 101 is not waited out)."""
    with connect_raw(server) as sock:
        sock.sendall(handshake_bytes(target, extra=extra))
        data = read_head(sock)
        if not data.startswith(b"HTTP/1.1 101 "):
            data += read_until_closed(sock)
    status, headers, _ = parse_response(
        data.split(b"\r\n\r\n")[0] + b"\r\n\r\n" if data.startswith(b"HTTP/1.1 101 ") else data
    )
    return status, headers


# -- Origin allowlist (RFC 6455 §10.2, RFC 6454) -------------------------------------------


@pytest.fixture
def origin_server() -> Iterator[WebSocketServer]:
    with running(make_app(allowed_origins=[APP_ORIGIN, "http://localhost:3000"])) as server:
        yield server


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com.evil.com",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "https://app.example.com/path",
        "*",
        "https://user@app.example.com",
    ],
)
def test_origin_not_on_the_list_is_403(
    origin_server: WebSocketServer, origin: str, logs: pytest.LogCaptureFixture
) -> None:
    status, headers = status_of(origin_server, extra=f"Origin: {origin}\r\n")
    assert status == 403
    assert "www-authenticate" not in headers
    assert wait_for(
        lambda: any("status=403 reason=origin_not_allowed" in r.getMessage() for r in logs.records)
    )


@pytest.mark.parametrize(
    "origin",
    [APP_ORIGIN, "HTTPS://APP.EXAMPLE.COM", "https://app.example.com:443", "http://localhost:3000"],
)
def test_listed_origin_is_accepted_in_any_case(origin_server: WebSocketServer, origin: str) -> None:
    assert status_of(origin_server, extra=f"Origin: {origin}\r\n")[0] == 101


def test_missing_origin_is_403_unless_allowed(origin_server: WebSocketServer) -> None:
    assert status_of(origin_server)[0] == 403
    with running(make_app(allowed_origins=[APP_ORIGIN], allow_missing_origin=True)) as server:
        assert status_of(server)[0] == 101


def test_two_origin_headers_are_400(origin_server: WebSocketServer) -> None:
    extra = f"Origin: {APP_ORIGIN}\r\nOrigin: https://evil.example\r\n"
    assert status_of(origin_server, extra=extra)[0] == 400


def test_allowed_origin_is_not_authentication(origin_server: WebSocketServer) -> None:
    status, headers = status_of(origin_server, "/ws", extra=f"Origin: {APP_ORIGIN}\r\n")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


def test_cookie_source_without_allowlist_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        make_app(sources=[CookieToken()])


def test_cross_site_page_with_a_valid_cookie_is_refused() -> None:
    ran: list[str] = []

    def handler(ws: WebSocket) -> None:
        ran.append(ws.identity.subject)

    app = make_app(routes={"/ws": handler}, sources=[CookieToken()], allowed_origins=[APP_ORIGIN])
    with running(app) as server:
        cookie = f"Cookie: token={SECRET}\r\n"
        assert status_of(server, "/ws", extra=cookie + "Origin: https://evil.example\r\n")[0] == 403
        assert status_of(server, "/ws", extra=cookie + f"Origin: {APP_ORIGIN}\r\n")[0] == 101
    assert ran == ["alice"]


def test_malformed_allowlist_entry_is_refused() -> None:
    for bad in (["app.example.com"], ["https://app.example.com/"], "https://app.example.com"):
        with pytest.raises(ConfigurationError):
            make_app(allowed_origins=bad)


def test_origin_appears_in_the_log_line(
    origin_server: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    assert status_of(origin_server, extra=f"Origin: {APP_ORIGIN}\r\n")[0] == 101
    assert wait_for(
        lambda: any(
            r.getMessage().startswith("accepted") and f"origin={APP_ORIGIN}" in r.getMessage()
            for r in logs.records
        )
    )


# -- heads that are too big or pathological ------------------------------------------------


def test_endless_header_is_cut_off_at_the_limit(server: WebSocketServer) -> None:
    # Stream a header that never ends, 1 KiB at a time, watching for the answer: it
    # must come once the 8 KiB line limit is crossed, not when we stop sending.
    with connect_raw(server) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        answered = False
        while sent < 1024 * 1024 and not answered:
            try:
                sock.sendall(b"a" * 1024)
            except OSError:
                break
            sent += 1024
            answered = bool(select.select([sock], [], [], 0.02)[0])
        response = read_until_closed(sock)
    assert answered and sent <= 16 * 1024
    assert parse_response(response)[0] == 431


def test_two_thousand_headers_get_431_and_the_server_lives_on(server: WebSocketServer) -> None:
    extra = "".join(f"X-{i}: v\r\n" for i in range(2000))
    with connect_raw(server) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(handshake_bytes(f"/ws?token={SECRET}", extra=extra))
        assert parse_response(read_until_closed(sock))[0] == 431
    welcome_then_echo(server)


@pytest.mark.parametrize(
    "header",
    ["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Connection", "Authorization", "Cookie"],
)
def test_backtracking_bait_is_answered(server: WebSocketServer, header: str) -> None:
    # ws CVE-2021-32640: 'b' + spaces + 'x' made a regex backtrack for minutes.
    value = "b" + " " * 8000 + "x"
    status, _ = status_of(server, extra=f"{header}: {value}\r\n")
    assert status in (101, 400, 401, 426)
    welcome_then_echo(server)


def test_quoted_cookie_bait_is_answered() -> None:
    # CVE-2024-7592: quadratic parsing of quoted cookie values with backslashes.
    app = make_app(sources=[CookieToken()], allowed_origins=[APP_ORIGIN])
    with running(app) as server:
        bait = 'a="' + "\\\\" * 3500 + '"'
        status, _ = status_of(server, "/ws", extra=f"Cookie: {bait}\r\nOrigin: {APP_ORIGIN}\r\n")
        assert status == 401


# -- slow clients, pending caps, hung verifiers --------------------------------------------


def test_slowloris_is_cut_off_while_a_normal_client_is_served() -> None:
    app = make_app(handshake_timeout=1.0)
    with running(app, max_pending_per_ip=8) as server:
        attackers = [
            socket.create_connection(server.address, timeout=3, source_address=(ATTACKER, 0))
            for _ in range(12)
        ]
        started = time.monotonic()
        stop = threading.Event()

        def dribble() -> None:
            request = handshake_bytes(f"/ws?token={SECRET}")
            for position in range(len(request)):
                for sock in attackers:
                    with contextlib.suppress(OSError):
                        sock.send(request[position : position + 1])
                if stop.wait(0.1):
                    return

        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        try:
            began = time.monotonic()
            welcome_then_echo(server)
            assert time.monotonic() - began < 1.0
            statuses = []
            for sock in attackers:
                response = read_until_closed(sock, timeout=3)
                statuses.append(parse_response(response)[0] if response else 0)
            assert time.monotonic() - started < 2.5  # deadline 1 s (+ slack), not "never"
        finally:
            stop.set()
            dribbler.join(5)
            for sock in attackers:
                sock.close()
    # The 4 oldest were dropped when newer ones from the same address passed the
    # per-address cap (no answer: "0"); the 8 left hit the deadline and got 408.
    assert sorted(statuses) == [0] * 4 + [408] * 8


def test_idle_connections_are_closed_at_the_deadline() -> None:
    with running(make_app(handshake_timeout=0.5)) as server, connect_raw(server) as idle:
        started = time.monotonic()
        response = read_until_closed(idle, timeout=3)
        assert parse_response(response)[0] == 408
        assert time.monotonic() - started < 1.5


def test_at_the_pending_cap_the_oldest_idle_handshake_makes_room() -> None:
    with running(make_app(handshake_timeout=3.0), max_pending=4, max_pending_per_ip=100) as server:
        idle = [
            socket.create_connection(server.address, timeout=3, source_address=(ATTACKER, 0))
            for _ in range(4)
        ]
        try:
            assert wait_for(lambda: server.pending_handshakes == 4)
            welcome_then_echo(server)  # served at once: the oldest idle one was dropped
            assert read_until_closed(idle[0], timeout=2) == b""
            assert server.pending_handshakes == 3
        finally:
            for sock in idle:
                sock.close()
        assert wait_for(lambda: server.pending_handshakes == 0)


def test_a_hung_verifier_gets_503_without_stalling_others() -> None:
    release = threading.Event()

    def verifier(token: str) -> Identity:
        if token == "hang":
            release.wait(30)
        if token != SECRET:
            raise InvalidToken("unknown_token")
        return Identity(subject="alice")

    try:
        with running(make_app(verifier=verifier, verify_timeout=0.5)) as server:
            results: list[int] = []
            hung = threading.Thread(
                target=lambda: results.append(status_of(server, "/ws?token=hang")[0])
            )
            hung.start()
            welcome_then_echo(server)  # served while the other verification hangs
            hung.join(5)
            assert results == [503]
    finally:
        release.set()


# -- limits once connected -----------------------------------------------------------------


def test_many_tiny_fragments_close_with_1009() -> None:
    with running(make_app(max_fragments=100)) as server:
        sock = open_raw_ws(server)
        with sock:
            assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]
            flood = frame(0x1, b"", fin=False) + frame(0x0, b"", fin=False) * 200
            with contextlib.suppress(OSError):
                sock.sendall(flood)
            opcode, payload = read_frames(sock, 1)[0]
        assert (opcode, close_code(payload)) == (0x8, 1009)


def test_slow_handler_means_backpressure_not_buffering() -> None:
    release = threading.Event()

    def slow(ws: WebSocket) -> None:
        release.wait(10)
        for _ in ws:
            pass

    try:
        with running(make_app(routes={"/ws": slow})) as server:
            sock = open_raw_ws(server)
            with sock:
                sock.settimeout(1.0)
                sent = 0
                with pytest.raises(socket.timeout):
                    while sent < 256 * 1024 * 1024:  # the kernel buffers fill long before
                        sock.sendall(frame(0x2, b"x" * 65536))
                        sent += 65536
                assert sent < 256 * 1024 * 1024
    finally:
        release.set()


def test_silent_peer_is_closed_with_1011_after_the_ping_timeout(
    logs: pytest.LogCaptureFixture,
) -> None:
    with running(make_app(ping_interval=0.2, ping_timeout=0.3)) as server:
        sock = open_raw_ws(server)
        with sock:
            frames = read_frames(sock, 3, timeout=3)  # welcome, our ping, then the close
        assert frames[0] == (0x1, WELCOME.encode())
        assert frames[1][0] == 0x9
        assert frames[2][0] == 0x8 and close_code(frames[2][1]) == 1011
    assert wait_for(lambda: any("code=1011" in r.getMessage() for r in logs.records))


def test_peer_that_answers_pings_stays_connected() -> None:
    with (
        running(make_app(ping_interval=0.1, ping_timeout=0.2)) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        assert ws.recv(timeout=3) == WELCOME
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)  # ten ping rounds pass quietly
        ws.send("still here")
        assert ws.recv(timeout=3) == "You said: still here"


def test_idle_timeout_closes_with_1001() -> None:
    with (
        running(make_app(idle_timeout=0.3)) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        assert ws.recv(timeout=3) == WELCOME
        with pytest.raises(WSConnectionClosed) as info:
            ws.recv(timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


def test_peer_that_never_answers_close_is_dropped_after_close_timeout() -> None:
    def quick(ws: WebSocket) -> None:
        ws.send("bye")  # the handler returns: the server closes with 1000

    with running(make_app(routes={"/ws": quick}, close_timeout=0.5)) as server:
        sock = open_raw_ws(server)
        with sock:
            frames = read_frames(sock, 2)
            assert frames[1][0] == 0x8 and close_code(frames[1][1]) == 1000
            started = time.monotonic()
            assert read_until_closed(sock, timeout=3) == b""  # we never answer the Close
            assert time.monotonic() - started < 1.5


MALFORMED = [
    ("reserved bit", bytes([0xC1, 0x80]) + b"\0\0\0\0", 1002),
    ("unknown opcode", bytes([0x83, 0x80]) + b"\0\0\0\0", 1002),
    ("invalid UTF-8 text", frame(0x1, b"\xff\xfe"), 1007),
    ("fragmented ping", frame(0x9, b"x", fin=False), 1002),
    ("ping over 125 bytes", frame(0x9, b"x" * 126), 1002),
    ("64-bit length with MSB set", bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63), 1002),
    ("continuation without start", frame(0x0, b"x"), 1002),
    ("close code 999", frame(0x8, struct.pack("!H", 999)), 1002),
    ("close code 1005", frame(0x8, struct.pack("!H", 1005)), 1002),
    ("unmasked", frame(0x1, b"hi", mask=False), 1002),
    ("compressed frame (RSV1)", bytes([0xC1, 0x82]) + b"\0\0\0\0hi", 1002),
]


@pytest.mark.parametrize(
    ("data", "code"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_frames_close_promptly(server: WebSocketServer, data: bytes, code: int) -> None:
    sock = open_raw_ws(server)
    with sock:
        assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]
        sock.sendall(data)
        opcode, payload = read_frames(sock, 1)[0]
        assert (opcode, close_code(payload)) == (0x8, code)
        assert read_until_closed(sock, timeout=2) == b""
    welcome_then_echo(server)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4000, 4999])
def test_valid_close_codes_are_echoed(server: WebSocketServer, code: int) -> None:
    sock = open_raw_ws(server)
    with sock:
        read_frames(sock, 1)
        sock.sendall(frame(0x8, struct.pack("!H", code) + b"done"))
        opcode, payload = read_frames(sock, 1)[0]
        assert (opcode, close_code(payload)) == (0x8, code)


# -- failed-authentication rate limit ------------------------------------------------------


def test_repeated_failures_get_429_before_the_verifier_and_spare_other_ips() -> None:
    calls: list[str] = []

    def verifier(token: str) -> Identity:
        calls.append(token)
        raise InvalidToken("unknown_token")

    app = make_app(verifier=verifier, limiter=FailedAuthLimiter(rate=0.01, burst=3))
    with running(app) as server:

        def attempt(source_ip: str) -> tuple[int, dict[str, str]]:
            with socket.create_connection(
                server.address, timeout=3, source_address=(source_ip, 0)
            ) as sock:
                sock.sendall(handshake_bytes("/ws?token=guess"))
                status, headers, _ = parse_response(read_until_closed(sock))
                return status, headers

        assert [attempt(ATTACKER)[0] for _ in range(3)] == [401, 401, 401]
        status, headers = attempt(ATTACKER)
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert len(calls) == 3  # the 4th attempt cost no verifier work
        assert attempt("127.0.0.1")[0] == 401  # another address still gets its budget


def test_forwarded_for_is_trusted_only_from_listed_proxies() -> None:
    app = make_app(
        verifier=lambda token: (_ for _ in ()).throw(InvalidToken("nope")),
        limiter=FailedAuthLimiter(rate=0.01, burst=1),
        trusted_proxies=["127.0.0.1"],
    )
    with running(app) as server:

        def via_proxy(client: str) -> int:
            return status_of(server, "/ws?token=x", extra=f"X-Forwarded-For: {client}\r\n")[0]

        assert via_proxy("203.0.113.7") == 401
        assert via_proxy("203.0.113.7") == 429
        assert via_proxy("198.51.100.1") == 401  # a different client behind the proxy
        # From an untrusted peer the header is ignored: rotating it does not help.
        with socket.create_connection(
            server.address, timeout=3, source_address=(ATTACKER, 0)
        ) as sock:
            sock.sendall(handshake_bytes("/ws?token=x", extra="X-Forwarded-For: 1.1.1.1\r\n"))
            assert parse_response(read_until_closed(sock))[0] == 401
        with socket.create_connection(
            server.address, timeout=3, source_address=(ATTACKER, 0)
        ) as sock:
            sock.sendall(handshake_bytes("/ws?token=x", extra="X-Forwarded-For: 2.2.2.2\r\n"))
            assert parse_response(read_until_closed(sock))[0] == 429


def test_rate_limit_can_be_switched_off() -> None:
    with running(make_app(limiter=None)) as server:
        assert all(status_of(server, "/ws?token=bad")[0] == 401 for _ in range(30))


# -- expiry closes with 1008 (RFC 6455 §7.4.1), reasons never carry tokens -----------------


def test_expired_credential_closes_the_open_connection_with_1008() -> None:
    def verifier(token: str) -> Identity:
        return Identity(subject="bob", expires_at=time.time() + 0.5)

    with (
        running(make_app(verifier=verifier)) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        assert ws.recv(timeout=3) == WELCOME
        started = time.monotonic()
        with pytest.raises(WSConnectionClosed) as info:
            while True:
                ws.recv(timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert info.value.rcvd.reason == "credential expired"
        assert time.monotonic() - started < 1.5


def test_app_rejects_bad_limits() -> None:
    for options in (
        {"ping_interval": 0},
        {"idle_timeout": -1},
        {"max_fragments": 0},
        {"verify_timeout": 0},
    ):
        with pytest.raises(ConfigurationError):
            WebSocketApp(
                {"/ws": echo},
                verifier=lambda t: Identity(subject="x"),
                sources=[QueryToken()],
                **options,  # type: ignore[arg-type]
            )
