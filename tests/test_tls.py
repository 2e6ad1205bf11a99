"""wss:// on the threaded server, with certificates made at test time (trustme).

The client here is ``websocket-client``, which reads and writes in the calling thread.
The ``websockets`` sync client reads in a background thread while the caller writes; on
one ``SSLSocket`` those calls run inside OpenSSL at once, which it does not support, and a
few opening requests in a hundred never fully left the client (the server saw part of
the head, then a 408 at its deadline). The server serializes its own SSL calls
(``tests/test_tls_threads.py``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import time
from collections.abc import Iterator

import pytest
import trustme
import websocket as wsclient  # websocket-client
from helpers import (
    SECRET,
    ServerProcess,
    handshake_bytes,
    make_app,
    read_until_closed,
    running,
    wait_for,
)
from websockets.sync.client import connect

from wsauth_sync import BearerToken, WebSocketServer
from wsauth_sync.echo import WELCOME


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def serving_tls(
    ca: trustme.CA, handshake_timeout: float
) -> contextlib.AbstractContextManager[WebSocketServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return running(make_app(handshake_timeout=handshake_timeout), ssl_context=context)


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[WebSocketServer]:
    # A deadline far from the tests' own waits: only the silent-client test is about it.
    with serving_tls(ca, handshake_timeout=10.0) as server:
        yield server


@pytest.fixture
def tls_server_1s(ca: trustme.CA) -> Iterator[WebSocketServer]:
    """A 1 s handshake deadline, for the tests that wait for it to cut a client off."""
    with serving_tls(ca, handshake_timeout=1.0) as server:
        yield server


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


def wss_url(server: WebSocketServer) -> str:
    host, port = server.address
    return f"wss://{host}:{port}/ws"


def open_wss(
    url: str, ca: trustme.CA, timeout: float = 3
) -> contextlib.closing[wsclient.WebSocket]:
    """A verifying ``websocket-client`` connection (one thread for every SSL call),
    closed when the ``with`` block ends."""
    return contextlib.closing(
        wsclient.create_connection(url, sslopt={"context": client_context(ca)}, timeout=timeout)
    )


def test_wss_echo_with_a_verifying_client(tls_server: WebSocketServer, ca: trustme.CA) -> None:
    with open_wss(f"{wss_url(tls_server)}?token={SECRET}", ca) as ws:
        assert ws.recv() == WELCOME
        ws.send("over TLS")
        assert ws.recv() == "You said: over TLS"
        big = b"z" * 300_000  # several TLS records in both directions
        ws.send_binary(big)
        assert ws.recv() == big


def test_wss_refusal_is_a_401(tls_server: WebSocketServer, ca: trustme.CA) -> None:
    with pytest.raises(wsclient.WebSocketBadStatusException) as info:
        open_wss(wss_url(tls_server), ca)
    assert info.value.status_code == 401


def test_client_that_does_not_trust_the_certificate_fails(tls_server: WebSocketServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(
            f"{wss_url(tls_server)}?token={SECRET}",
            ssl=ssl.create_default_context(),
            open_timeout=3,
        )


def test_plaintext_client_on_the_tls_port_is_dropped(
    tls_server: WebSocketServer, ca: trustme.CA, logs: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(tls_server.address, timeout=3) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
        started = time.monotonic()
        assert b"HTTP/1.1 101" not in read_until_closed(sock, timeout=3)
        assert time.monotonic() - started < 1.5
    # The ssl module closes the socket before the server logs: wait for the line.
    assert wait_for(
        lambda: any(
            "dropped" in r.getMessage() and "reason=tls_handshake_failed" in r.getMessage()
            for r in logs.records
        )
    )
    with open_wss(f"{wss_url(tls_server)}?token={SECRET}", ca) as ws:
        assert ws.recv() == WELCOME  # and the server goes on serving


def test_silent_client_is_cut_off_during_the_tls_handshake(
    tls_server_1s: WebSocketServer, logs: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(tls_server_1s.address, timeout=3) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, timeout=3) == b""
        assert time.monotonic() - started < 2.0  # deadline 1 s
    assert wait_for(lambda: any("reason=tls_timeout" in r.getMessage() for r in logs.records))


def test_cli_serves_wss(ca: trustme.CA, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "wsauth_sync",
            "echo",
            "--port",
            "0",
            "--token",
            SECRET,
            "--certfile",
            str(folder / "cert.pem"),
            "--keyfile",
            str(folder / "key.pem"),
        ]
    )
    try:
        url = server.expect(r"Listening on (wss://\S+)").group(1)
        with open_wss(f"{url}?token={SECRET}", ca, timeout=5) as ws:
            assert ws.recv() == WELCOME
    finally:
        assert server.stop() == 0


def test_clear_text_url_tokens_off_loopback_are_warned_about(
    logs: pytest.LogCaptureFixture,
) -> None:
    from wsauth_sync.server import exposure_warning

    app = make_app()
    message = exposure_warning(app, "0.0.0.0", tls=False)
    assert message is not None and "without TLS with query tokens" in message
    assert exposure_warning(app, "0.0.0.0", tls=True) is None
    assert exposure_warning(app, "::1", tls=False) is None
    header_only = make_app(sources=[BearerToken()])
    assert exposure_warning(header_only, "192.0.2.1", tls=False) is None
    with running(app):  # a loopback server logs no such warning
        pass
    assert not [r for r in logs.records if r.levelname == "WARNING"]
