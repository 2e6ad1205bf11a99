"""Attacks through what a credential names and what a verifier raises.

A subject is chosen by whoever registered it (a user name) and a custom verifier's
exception may quote the token: neither may forge a log line or put a token in one.
Real sockets on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket

import pytest
from helpers import (
    KEY,
    SECRET,
    exchange,
    handshake_bytes,
    make_app,
    parse_response,
    running,
    secret_forms,
    wait_for,
    ws_url,
)
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.sync.client import connect

from wsauth_sync import (
    CallableVerifier,
    Identity,
    StaticTokens,
    WebSocket,
    WebSocketMiddleware,
    wsgi,
)

FORGED = "alice\r\nrejected peer=10.0.0.1:1 status=401 reason=expired"


def _fail(ws: WebSocket) -> None:
    raise RuntimeError("handler bug")


def test_a_subject_with_line_breaks_cannot_forge_the_handler_failure_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsauth_sync")
    app = make_app(routes={"/ws": _fail}, verifier=StaticTokens({SECRET: FORGED}))
    with running(app) as server:
        with (
            connect(ws_url(server) + f"?token={SECRET}", open_timeout=3) as client,
            pytest.raises(ClientClosed),
        ):
            client.recv(timeout=3)
        assert wait_for(lambda: any(r.getMessage().startswith("closed") for r in caplog.records))
    failed = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert failed, "the handler's failure is logged"
    for record in caplog.records:
        message = record.getMessage()
        assert "\r" not in message and "\n" not in message, message


def _cancelled(token: str) -> Identity:
    # What asyncio.run() raises in a verifier whose coroutine was cancelled: a
    # BaseException, not an Exception, quoting the token as careless code does.
    raise asyncio.CancelledError(f"lookup of {token} cancelled")


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "time_limited"])
def test_a_verifier_raising_a_base_exception_fails_closed_without_quoting_the_token(
    inline: bool, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = CallableVerifier(_cancelled)
    app = make_app(verifier=verifier, verify_timeout=None if inline else 5.0)
    with running(app) as server:
        for _ in range(3):  # the server answers every time, not just the first
            status, headers, _ = parse_response(
                exchange(server, handshake_bytes(f"/ws?token={SECRET}"))
            )
            assert (status, headers.get("retry-after")) == (503, "5")
    assert [
        r.wsauth["reason"]  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "wsauth", {}).get("event") == "rejected"
    ] == ["verifier_error"] * 3
    output = "".join(capfd.readouterr()) + caplog.text
    for form in secret_forms():
        assert form not in output


def _reauth_on_every_message(ws: WebSocket) -> None:
    while True:
        message = ws.recv(timeout=5)
        ws.reauthenticate(message if isinstance(message, str) else message.decode())
        ws.send("ok")


def test_bad_tokens_given_to_reauthenticate_spend_the_failed_auth_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wsauth_sync")
    app = make_app(routes={"/ws": _reauth_on_every_message})
    with running(app) as server:
        url = ws_url(server) + f"?token={SECRET}"
        with connect(url, open_timeout=3) as early:  # opened while the budget holds
            for attempt in range(20):  # the limiter's burst, one guess per connection
                with connect(url, open_timeout=3) as client, pytest.raises(ClientClosed):
                    client.send(f"guess-{attempt}")
                    client.recv(timeout=3)
                assert client.close_code == 1008, attempt
                assert client.close_reason == "reauthentication failed: invalid"
            # The budget is spent: a handshake, even with the valid token, gets 429 ...
            status, headers, _ = parse_response(
                exchange(server, handshake_bytes(f"/ws?token={SECRET}"))
            )
            assert status == 429 and "retry-after" in headers
            # ... and so does a refresh on a connection opened before, valid token or not.
            with pytest.raises(ClientClosed):
                early.send(SECRET)
                early.recv(timeout=3)
            assert (early.close_code, early.close_reason) == (
                1008,
                "reauthentication failed: too many attempts",
            )
    for form in secret_forms():
        assert form not in caplog.text


UPGRADE_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/ws",
    "QUERY_STRING": f"token={SECRET}",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": KEY,
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "wsgi.url_scheme": "http",
}


def test_a_101_uwsgi_cannot_write_gives_back_the_identitys_connection_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uWSGI writes the 101 itself; when the client has gone its write raises OSError
    # ("write error"). The slot reserved for the connection must come back each time,
    # or a flaky client locks its own account out at max_connections_per_identity.
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def uwsgi_socket(environ: object) -> socket.socket:
            client = socket.create_connection(listener.getsockname(), timeout=3)
            server_side, _ = listener.accept()
            client.close()  # the client is gone before the 101
            return server_side  # the middleware closes it, as it does uWSGI's duplicate

        monkeypatch.setattr(wsgi, "uwsgi_socket", uwsgi_socket)
        statuses: list[str] = []

        def start_response(status: str, headers: object, exc_info: object = None) -> object:
            statuses.append(status)

            def write(data: bytes) -> None:
                raise OSError("write error")

            return write

        middleware = WebSocketMiddleware(
            lambda environ, start: [], make_app(max_connections_per_identity=2)
        )
        for _ in range(4):
            middleware({**UPGRADE_ENVIRON, "wsgi.input": io.BytesIO()}, start_response)
    assert [status.split()[0] for status in statuses] == ["101"] * 4


def test_a_handler_raising_a_base_exception_closes_1011_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio's CancelledError (what asyncio.run() raises inside a handler that was
    cancelled) is no Exception: it must still end in 1011 and a log line, not a dead thread."""
    caplog.set_level(logging.INFO, logger="wsauth_sync")

    def cancelled(ws: object) -> None:
        raise asyncio.CancelledError("handler cancelled")

    with (
        running(make_app(routes={"/ws": cancelled})) as server,
        connect(f"{ws_url(server)}?token={SECRET}", open_timeout=3) as ws,
    ):
        with pytest.raises(ClientClosed) as closed:
            ws.recv(timeout=3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert wait_for(lambda: "handler failed" in caplog.text)
