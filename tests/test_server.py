"""The threaded server over real loopback sockets, driven by independent clients.

Clients: the ``websockets`` library (sync client), ``websocket-client``, and raw sockets
where exact bytes matter. Every wait is bounded by a socket timeout or a deadline.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from typing import Any

import pytest
import websocket as wsclient  # websocket-client
from helpers import (
    ACCEPT,
    SECRET,
    connect_raw,
    exchange,
    frame,
    handshake_bytes,
    make_app,
    parse_response,
    read_101,
    read_frames,
    read_head,
    read_until_closed,
    running,
    secret_forms,
    wait_for,
    ws_url,
)
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import (
    CookieToken,
    Identity,
    WebSocket,
    WebSocketServer,
    encode_subprotocol_token,
    handle_socket,
)
from wsauth_sync.echo import WELCOME

# -- accepted: each token source, two independent clients ----------------------------------


def test_query_token_with_websockets_client(server: WebSocketServer) -> None:
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
        assert ws.recv(timeout=3) == WELCOME
        ws.send("hello")
        assert ws.recv(timeout=3) == "You said: hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=3) == b"\x00\x01binary"


def test_bearer_header_with_websockets_client(server: WebSocketServer) -> None:
    with connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {SECRET}"}, open_timeout=3
    ) as ws:
        assert ws.recv(timeout=3) == WELCOME
        assert ws.subprotocol is None


def test_subprotocol_token_with_websockets_client(server: WebSocketServer) -> None:
    with connect(
        ws_url(server),
        subprotocols=["bearer", SECRET],  # type: ignore[list-item]
        open_timeout=3,
    ) as ws:
        assert ws.subprotocol == "bearer"
        assert ws.recv(timeout=3) == WELCOME


def test_prefixed_subprotocol_token_selects_the_application_protocol() -> None:
    with (
        running(make_app(subprotocols=("chat.v1",))) as server,
        connect(
            ws_url(server),
            subprotocols=["chat.v1", encode_subprotocol_token(SECRET)],  # type: ignore[list-item]
            open_timeout=3,
        ) as ws,
    ):
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=3) == WELCOME


def test_cookie_token_with_websocket_client() -> None:
    with running(
        make_app(sources=(CookieToken(),), allowed_origins=["http://app.example:8080"])
    ) as server:
        ws = wsclient.create_connection(
            ws_url(server), cookie=f"token={SECRET}", timeout=3, origin="http://app.example:8080"
        )
        try:
            assert ws.recv() == WELCOME
            ws.send("over cookie")
            assert ws.recv() == "You said: over cookie"
        finally:
            ws.close()


@pytest.mark.parametrize("how", ["query", "bearer", "subprotocol"])
def test_each_source_with_websocket_client(server: WebSocketServer, how: str) -> None:
    url, options = ws_url(server), dict[str, Any]()
    if how == "query":
        url += f"?token={SECRET}"
    elif how == "bearer":
        options["header"] = [f"Authorization: Bearer {SECRET}"]
    else:
        options["subprotocols"] = ["bearer", SECRET]
    ws = wsclient.create_connection(url, timeout=3, **options)
    try:
        assert ws.recv() == WELCOME
        ws.send("x" * 70000)
        assert ws.recv() == "You said: " + "x" * 70000
    finally:
        ws.close()
    assert ws.status == 101


def test_handler_reads_the_identity_and_redacted_request() -> None:
    seen: list[tuple[Identity, str, str | None]] = []

    def handler(ws: WebSocket) -> None:
        seen.append((ws.identity, ws.request.target, ws.subprotocol))
        ws.send(ws.identity.subject)

    with (
        running(make_app(routes={"/ws": handler})) as server,
        connect(f"{ws_url(server)}?token={SECRET}&room=1", open_timeout=3) as ws,
    ):
        assert ws.recv(timeout=3) == "alice"
    assert seen == [
        (Identity(subject="alice", source="query"), "/ws?token=[REDACTED]&room=1", None)
    ]


# -- refused: exact answers, closed within a second ----------------------------------------

REFUSALS = [
    ("missing token", handshake_bytes("/ws"), 401, "reason=missing_token"),
    ("wrong token", handshake_bytes("/ws?token=nope"), 401, "reason=unknown_token"),
    ("unknown path", handshake_bytes(f"/other?token={SECRET}"), 404, "reason=unknown_path"),
    (
        "POST",
        handshake_bytes(f"/ws?token={SECRET}").replace(b"GET", b"POST", 1),
        405,
        "reason=method_not_allowed",
    ),
    (
        "version 8",
        handshake_bytes(f"/ws?token={SECRET}").replace(b"Version: 13", b"Version: 8"),
        426,
        "reason=unsupported_version",
    ),
    (
        "TLS ClientHello",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(160),
        400,
        "reason=malformed_request",
    ),
    ("junk", b"HELO relay.invalid\r\n", 400, "reason=malformed_request"),
]


@pytest.mark.parametrize(
    ("data", "status", "log_reason"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusal_is_answered_in_full_and_closed_within_a_second(
    server: WebSocketServer,
    logs: pytest.LogCaptureFixture,
    data: bytes,
    status: int,
    log_reason: str,
) -> None:
    with connect_raw(server) as sock:
        sock.sendall(data)
        started = time.monotonic()
        response = read_until_closed(sock, timeout=3)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    got_status, headers, body = parse_response(response)
    assert got_status == status
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert wait_for(
        lambda: any(f"status={status} {log_reason}" in r.getMessage() for r in logs.records)
    )
    # The server is still serving everyone else.
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
        assert ws.recv(timeout=3) == WELCOME


def test_websockets_client_sees_401_with_challenge(server: WebSocketServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{ws_url(server)}?token=wrong", open_timeout=3)
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="wsauth", error="invalid_token"'
    assert response.body == b"401 Unauthorized\n"


def test_websocket_client_sees_401_without_token(server: WebSocketServer) -> None:
    with pytest.raises(wsclient.WebSocketBadStatusException) as info:
        wsclient.create_connection(ws_url(server), timeout=3)
    assert info.value.status_code == 401
    assert (info.value.resp_headers or {})["www-authenticate"] == 'Bearer realm="wsauth"'


def test_failing_verifier_gives_503_and_the_server_keeps_serving() -> None:
    def verifier(token: str) -> Identity:
        if token == "boom":
            raise RuntimeError("backend down")
        return Identity(subject="ok")

    with running(make_app(verifier=verifier)) as server:
        status, headers, _ = parse_response(exchange(server, handshake_bytes("/ws?token=boom")))
        assert (status, headers["retry-after"]) == (503, "5")
        with connect(f"{ws_url(server)}?token=fine", open_timeout=3) as ws:
            assert ws.recv(timeout=3) == WELCOME


# -- the connection ------------------------------------------------------------------------


def test_eager_first_frame_sent_with_the_head_is_not_lost(server: WebSocketServer) -> None:
    with connect_raw(server) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}") + frame(0x1, b"hi"))
        head = read_head(sock)
        assert parse_response(head)[1]["sec-websocket-accept"] == ACCEPT
        assert read_frames(sock, 2) == [(0x1, WELCOME.encode()), (0x1, b"You said: hi")]


def test_message_over_the_size_limit_closes_with_1009() -> None:
    with (
        running(make_app(max_message_size=1024)) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3, max_size=None) as ws,
    ):
        assert ws.recv(timeout=3) == WELCOME
        ws.send("x" * 2048)
        with pytest.raises(WSConnectionClosed) as info:
            ws.recv(timeout=3)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009


def test_size_limit_counts_across_fragments() -> None:
    with running(make_app(max_message_size=1024)) as server, connect_raw(server) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
        read_101(sock)
        assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]
        sock.sendall(frame(0x1, b"a" * 600, fin=False) + frame(0x0, b"b" * 600))
        opcode, payload = read_frames(sock, 1)[0]
        assert opcode == 0x8
        assert int.from_bytes(payload[:2], "big") == 1009


def test_default_size_limit_is_one_mebibyte(server: WebSocketServer) -> None:
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3, max_size=None) as ws:
        ws.recv(timeout=3)
        ws.send(b"x" * (1 << 20))
        assert ws.recv(timeout=5) == b"x" * (1 << 20)
        ws.send(b"x" * ((1 << 20) + 1))
        with pytest.raises(WSConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_unmasked_client_frame_closes_with_1002(server: WebSocketServer) -> None:
    with connect_raw(server) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}") + frame(0x1, b"hi", mask=False))
        read_101(sock)
        frames = read_frames(sock, 2)
        assert frames[1][0] == 0x8
        assert int.from_bytes(frames[1][1][:2], "big") == 1002


def test_ping_is_answered_and_client_close_is_echoed(server: WebSocketServer) -> None:
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
        ws.recv(timeout=3)
        assert ws.ping(b"are you there").wait(timeout=3)
        ws.close(code=4000, reason="bye")
        assert ws.close_code == 4000


def test_handler_exception_closes_with_1011_and_is_logged(logs: pytest.LogCaptureFixture) -> None:
    def handler(ws: WebSocket) -> None:
        ws.recv(timeout=3)
        raise ValueError("handler bug")

    with (
        running(make_app(routes={"/ws": handler})) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        ws.send("go")
        with pytest.raises(WSConnectionClosed) as info:
            ws.recv(timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert wait_for(lambda: any("handler failed" in r.getMessage() for r in logs.records))
    assert wait_for(
        lambda: any(
            "closed " in r.getMessage() and "code=1011" in r.getMessage() for r in logs.records
        )
    )


def test_thread_safe_send_from_many_threads() -> None:
    def handler(ws: WebSocket) -> None:
        def burst(n: int) -> None:
            for i in range(50):
                ws.send(f"{n}:{i}")

        workers = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(5)
        ws.recv(timeout=5)

    with (
        running(make_app(routes={"/ws": handler})) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        got = {ws.recv(timeout=3) for _ in range(200)}
        assert got == {f"{n}:{i}" for n in range(4) for i in range(50)}
        ws.send("done")


# -- the server ----------------------------------------------------------------------------


def test_shutdown_closes_open_connections_with_1001() -> None:
    with running() as server, connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as client:
        assert client.recv(timeout=3) == WELCOME
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < 4.0  # close_timeout 2 s + 1 s
        with pytest.raises(WSConnectionClosed) as info:
            client.recv(timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


def test_connection_cap_answers_503_and_keeps_existing_connections() -> None:
    with (
        running(max_connections=1) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as first,
    ):
        assert first.recv(timeout=3) == WELCOME
        status, headers, _ = parse_response(
            exchange(server, handshake_bytes(f"/ws?token={SECRET}"))
        )
        assert (status, headers["retry-after"]) == (503, "1")
        first.send("still here")
        assert first.recv(timeout=3) == "You said: still here"


def test_slow_client_is_cut_off_at_the_absolute_deadline(logs: pytest.LogCaptureFixture) -> None:
    with running(make_app(handshake_timeout=0.5)) as server, connect_raw(server) as sock:
        data = handshake_bytes(f"/ws?token={SECRET}")
        started = time.monotonic()
        response = b""
        sock.settimeout(0.1)
        for byte in data:  # one byte every 0.1 s: each recv timeout alone would never fire
            try:
                sock.sendall(bytes([byte]))
                response += sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if response:
                break
            if time.monotonic() - started > 3:
                break
        response += read_until_closed(sock, timeout=2)
        assert parse_response(response)[0] == 408
        assert time.monotonic() - started < 2.0
    assert any("reason=handshake_timeout" in r.getMessage() for r in logs.records)


def test_listen_backlog_is_at_least_128() -> None:
    with running() as server:
        clients = []
        try:
            for _ in range(128):
                clients.append(socket.create_connection(server.address, timeout=3))
        finally:
            for client in clients:
                client.close()
    assert len(clients) == 128


def test_socketserver_can_hand_its_socket_to_handle_socket() -> None:
    app = make_app()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handle_socket(self.request, self.client_address, app)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as legacy:
        legacy.daemon_threads = True
        thread = threading.Thread(target=legacy.serve_forever, daemon=True)
        thread.start()
        try:
            host, port = legacy.socket.getsockname()[:2]
            with connect(f"ws://{host}:{port}/ws?token={SECRET}", open_timeout=3) as ws:
                assert ws.recv(timeout=3) == WELCOME
                ws.send("legacy")
                assert ws.recv(timeout=3) == "You said: legacy"
            with pytest.raises(InvalidStatus) as info:
                connect(f"ws://{host}:{port}/ws", open_timeout=3)
            assert info.value.response.status_code == 401
        finally:
            legacy.shutdown()
            thread.join(5)


# -- logs ----------------------------------------------------------------------------------


def test_one_log_line_per_decision(server: WebSocketServer, logs: pytest.LogCaptureFixture) -> None:
    with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
        ws.recv(timeout=3)
    with pytest.raises(InvalidStatus):
        connect(f"{ws_url(server)}?token=bad", open_timeout=3)
    assert wait_for(
        lambda: (
            sum(r.getMessage().startswith(("accepted", "rejected", "closed")) for r in logs.records)
            == 3
        )
    )
    lines = [r.getMessage() for r in logs.records if r.name == "wsauth_sync"]
    assert any(
        line.startswith("accepted peer=127.0.0.1:") and "subject=alice source=query" in line
        for line in lines
    )
    assert any(
        line.startswith("rejected peer=127.0.0.1:")
        and "status=401 reason=unknown_token path=/ws source=query" in line
        for line in lines
    )
    assert any(line.startswith("closed peer=127.0.0.1:") and "code=1000" in line for line in lines)


def test_token_never_appears_in_logs_or_responses(logs: pytest.LogCaptureFixture) -> None:
    """Every source, accepted and refused; every log level; every response byte."""
    seen: list[bytes] = []
    near_miss = SECRET + "x"
    with running(
        make_app(sources=(CookieToken(),), allowed_origins=["https://app.example"])
    ) as cookie_server:
        seen.append(
            exchange(
                cookie_server,
                handshake_bytes(
                    "/ws", extra=f"Cookie: token={near_miss}\r\nOrigin: https://app.example\r\n"
                ),
            )
        )
    with running() as server:
        for token in (SECRET, near_miss):
            for url, extra in (
                (f"/ws?token={token}", ""),
                ("/ws", f"Authorization: Bearer {token}\r\n"),
                ("/ws", f"Sec-WebSocket-Protocol: bearer, {token}\r\n"),
                ("/ws", f"Sec-WebSocket-Protocol: chat, {encode_subprotocol_token(token)}\r\n"),
                (f"/nope?token={token}", ""),
                (f"/ws?token={token}", f"Authorization: Bearer {token}\r\n"),
            ):
                with connect_raw(server) as sock:
                    sock.sendall(handshake_bytes(url, extra=extra))
                    sock.sendall(frame(0x8, b"\x03\xe8"))
                    seen.append(read_until_closed(sock))
        with connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws:
            ws.recv(timeout=3)
        assert wait_for(lambda: sum(r.getMessage().startswith("closed") for r in logs.records) >= 3)
    assert len(seen) == 13 and all(seen)
    # The websockets *client* logs its own request at DEBUG; everything else is ours.
    texts = [
        record.getMessage() + repr(record.__dict__)
        for record in logs.records
        if not record.name.startswith("websockets.client")
    ]
    assert any("rejected" in text for text in texts)
    for form in secret_forms() + secret_forms(near_miss):
        for text in texts:
            assert form not in text
        for response in seen:
            assert form.encode() not in response


def test_log_levels_info_for_clients_warning_for_server_faults(
    logs: pytest.LogCaptureFixture,
) -> None:
    def verifier(token: str) -> Identity:
        raise OSError("db down")

    with running(make_app(verifier=verifier)) as server:
        exchange(server, handshake_bytes("/ws?token=t"))
        exchange(server, handshake_bytes("/nope"))
    assert wait_for(lambda: len([r for r in logs.records if "rejected" in r.getMessage()]) == 2)
    levels = {
        r.getMessage().split(" reason=")[1].split()[0]: r.levelno
        for r in logs.records
        if "rejected" in r.getMessage()
    }
    assert levels == {"verifier_error": logging.WARNING, "unknown_path": logging.INFO}
