"""Re-authentication on an open connection, with the echo example's message convention.

A real server on 127.0.0.1 runs the echo handler; the ``websockets`` library is the
client. Tokens are short-lived JWTs (3 s), so the deadlines here are real ones: the
bounds leave wide margins for a loaded machine.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from helpers import make_app, running, secret_forms, wait_for, ws_url
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.sync.client import ClientConnection, connect

from wsauth_sync import CallableVerifier, Identity, InvalidToken, JWTVerifier, WebSocket
from wsauth_sync.echo import WELCOME, echo, reauth_token

KEY = "a-jwt-secret-that-is-at-least-32-bytes!"
LIFE = 3.0


def token(subject: str = "alice", *, life: float = LIFE, key: str = KEY, **claims: Any) -> str:
    return jwt.encode({"sub": subject, "exp": time.time() + life, **claims}, key, algorithm="HS256")


class Seen:
    """The echo handler, keeping the server-side WebSocket for the test to inspect."""

    def __init__(self) -> None:
        self.sockets: list[WebSocket] = []

    def __call__(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        echo(ws)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def url(seen: Seen) -> Iterator[str]:
    verifier = JWTVerifier(key=KEY, algorithms=["HS256"], leeway=0)
    with running(
        make_app(routes={"/ws": seen}, verifier=verifier, required_scopes={"/ws": ["chat"]})
    ) as server:
        yield ws_url(server)


@contextlib.contextmanager
def open_client(url: str, first: str) -> Iterator[ClientConnection]:
    with connect(f"{url}?token={first}", open_timeout=5) as client:
        assert client.recv(timeout=5) == WELCOME
        yield client


def next_json(client: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message = client.recv(timeout=timeout)
    assert isinstance(message, str) and message.startswith("{"), message
    return dict(json.loads(message))


def refresh(client: ClientConnection, new: str) -> dict[str, Any]:
    client.send(json.dumps({"type": "reauth", "token": new}))
    return next_json(client)


def closed_with(client: ClientConnection, timeout: float = 5) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    with pytest.raises(ClientClosed) as caught:
        while time.monotonic() < deadline:
            client.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code, caught.value.rcvd.reason


def ours(logs: pytest.LogCaptureFixture) -> list[str]:
    """The library's own log lines (the client library logs frames, tokens included)."""
    return [r.getMessage() for r in logs.records if r.name.startswith("wsauth_sync")]


def log_lines(logs: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [line for line in ours(logs) if line.startswith(event + " ")]


def test_short_tokens_refreshed_twice_keep_the_connection(
    url: str, seen: Seen, logs: pytest.LogCaptureFixture
) -> None:
    tokens = [token(n=1, scope="chat")]
    started = time.monotonic()
    with open_client(url, tokens[0]) as client:
        for n in (2, 3):
            asked = next_json(client)  # the server asks before the credential expires
            assert asked["type"] == "reauth_required" and 0 <= asked["expires_in"] <= LIFE
            tokens.append(token(n=n, scope="chat extra"))
            answer = refresh(client, tokens[-1])
            assert answer["type"] == "reauthenticated" and answer["expires_in"] >= 1
        assert time.monotonic() - started > LIFE  # past the first token's life
        client.send("still here")
        assert client.recv(timeout=5) == "You said: still here"
        (ws,) = seen.sockets
        assert ws.identity.claims["n"] == 3 and ws.identity.scopes == {"chat", "extra"}
        assert ws.identity.source == "query"
        # Not answering the third request: closed when the third token expires.
        assert next_json(client)["type"] == "reauth_required"
        assert closed_with(client, timeout=LIFE + 5) == (1008, "credential expired")
    assert time.monotonic() - started > 2 * LIFE  # three tokens' worth of connection
    lines = log_lines(logs, "reauthenticated")
    assert len(lines) == 2 and all("path=/ws subject=alice" in line for line in lines)
    text = "\n".join(ours(logs))
    assert not any(form in text for t in tokens for form in secret_forms(t))


def test_without_a_refresh_the_connection_closes_at_expiry(url: str) -> None:
    with open_client(url, token(scope="chat")) as client:
        assert next_json(client)["type"] == "reauth_required"
        assert closed_with(client, timeout=LIFE + 5) == (1008, "credential expired")


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda: token("mallory", scope="chat"), "subject_changed", "subject_changed"),
        (lambda: token(life=-30, scope="chat"), "expired", "expired"),
        (lambda: token(key="f" * 40, scope="chat"), "bad_signature", "invalid"),
        (lambda: token(scope="other"), "insufficient_scope", "forbidden"),
        (lambda: "", "empty_token", "invalid"),
    ],
)
def test_refused_refresh_closes_with_1008_and_an_audit_line(
    url: str, seen: Seen, logs: pytest.LogCaptureFixture, make: Any, reason: str, words: str
) -> None:
    bad = make()
    with open_client(url, token(life=60, scope="chat")) as client:
        client.send(json.dumps({"type": "reauth", "token": bad}))
        assert closed_with(client) == (1008, f"reauthentication failed: {words}")
    assert seen.sockets[0].identity.subject == "alice"  # unchanged
    assert wait_for(lambda: log_lines(logs, "reauthentication_failed"))
    (line,) = log_lines(logs, "reauthentication_failed")
    assert "subject=alice" in line and f"reason={reason}" in line
    assert "mallory" not in line
    text = "\n".join(ours(logs))
    assert not bad or not any(form in text for form in secret_forms(bad))
    assert not log_lines(logs, "reauthenticated")


def test_verifier_failure_or_hang_closes_with_1008(logs: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    release = threading.Event()

    def lookup(value: str) -> Identity:
        calls.append(value)
        if value == "hangs":
            release.wait(10)
        if value == "breaks":
            raise RuntimeError(f"database said no to {value}")
        if value not in ("first", "hangs", "breaks"):
            raise InvalidToken("unknown")
        return Identity(subject="alice")

    app = make_app(verifier=CallableVerifier(lookup), verify_timeout=0.5)
    try:
        with running(app) as server:
            for bad in ("breaks", "hangs"):
                with open_client(ws_url(server), "first") as client:
                    client.send(json.dumps({"type": "reauth", "token": bad}))
                    started = time.monotonic()
                    assert closed_with(client) == (1008, "reauthentication failed: unavailable")
                    assert time.monotonic() - started < 4  # the 0.5 s limit, with margin
    finally:
        release.set()
    lines = log_lines(logs, "reauthentication_failed")
    assert any("status=503 reason=verifier_error" in line for line in lines)
    assert any("status=503 reason=verifier_timeout" in line for line in lines)


def test_tokens_without_expiry_refresh_and_are_never_asked(logs: pytest.LogCaptureFixture) -> None:
    from helpers import SECRET

    with running(make_app()) as server, open_client(ws_url(server), SECRET) as client:
        assert refresh(client, SECRET) == {"type": "reauthenticated", "expires_in": None}
        client.send('{"type": "reauth"}')  # no token: an ordinary message
        assert client.recv(timeout=5) == 'You said: {"type": "reauth"}'
        client.send("{not json")
        assert client.recv(timeout=5) == "You said: {not json"
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.5)  # never asked for a token
    assert wait_for(lambda: len(log_lines(logs, "reauthenticated")) == 1)


def test_reauth_messages_are_recognized_exactly() -> None:
    assert reauth_token('{"type": "reauth", "token": "t"}') == "t"
    for other in (
        '{"type": "reauth", "token": 5}',
        '["reauth"]',
        "reauth",
        b"{}",
        '{"type": "Reauth", "token": "t"}',
    ):
        assert reauth_token(other) is None
