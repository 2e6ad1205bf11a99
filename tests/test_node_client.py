"""Node's ``ws`` package, the library the Express pattern is built on, as the client.

``tests/node`` holds the client script and its lockfile; the README's test command runs
``npm ci`` there.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    SECRET,
    exchange,
    frame,
    handshake_bytes,
    main_python_only,
    make_app,
    running,
    wait_for,
    ws_url,
)
from needs import NODE_MODULES, require_folder, require_tool

from wsauth_sync import BearerToken, CookieToken, QueryToken, SubprotocolToken, WebSocketServer
from wsauth_sync.echo import WELCOME, echo
from wsauth_sync.guards import FailedAuthLimiter

pytestmark = main_python_only("Node's ws package")
NODE_DIR = Path(__file__).resolve().parent / "node"
ORIGIN = "https://app.example"


def require_node() -> str:
    """Node, with the ws package installed next to the client script."""
    node = require_tool("node")
    require_folder("ws", NODE_DIR / "node_modules" / "ws", NODE_MODULES)
    return node


def node_client(**options: Any) -> dict[str, Any]:
    node = require_node()
    completed = subprocess.run(
        [node, str(NODE_DIR / "client.mjs"), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=NODE_DIR,
    )
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout))


@pytest.fixture(scope="module")
def server() -> Iterator[WebSocketServer]:
    app = make_app(
        sources=[QueryToken(), BearerToken(), SubprotocolToken(), CookieToken()],
        allowed_origins=[ORIGIN],
        allow_missing_origin=True,
        max_message_size=4096,
    )
    with running(app) as srv:
        yield srv


@pytest.mark.parametrize("source", ["query", "bearer", "subprotocol", "cookie"])
def test_each_source_text_and_binary_echo(server: WebSocketServer, source: str) -> None:
    payload = bytes(range(256))
    result = node_client(
        url=ws_url(server),
        source=source,
        token=SECRET,
        origin=ORIGIN,
        send=[{"text": "from node"}, {"binary": base64.b64encode(payload).decode()}],
        closeCode=4001,
    )
    assert result["events"] == [
        "open",
        {"text": WELCOME},
        {"text": "You said: from node"},
        {"binary": base64.b64encode(payload).decode()},
    ]
    assert result["protocol"] == ("bearer" if source == "subprotocol" else "")
    assert result["close"]["code"] == 4001  # our close code, echoed by the server


def test_refused_token_is_unexpected_response_401(server: WebSocketServer) -> None:
    result = node_client(url=ws_url(server), source="query", token="wrong")
    assert result["status"] == 401
    assert result["challenge"] == 'Bearer realm="wsauth", error="invalid_token"'
    assert result["body"] == "401 Unauthorized\n"
    assert "open" not in result["events"]


def test_missing_token_is_401_without_error_code(server: WebSocketServer) -> None:
    result = node_client(url=ws_url(server), source="none", token="")
    assert (result["status"], result["challenge"]) == (401, 'Bearer realm="wsauth"')


def test_cookie_from_a_foreign_origin_is_403(server: WebSocketServer) -> None:
    result = node_client(
        url=ws_url(server), source="cookie", token=SECRET, origin="https://evil.example"
    )
    assert result["status"] == 403


def test_server_close_codes_reach_node(server: WebSocketServer) -> None:
    result = node_client(
        url=ws_url(server), source="bearer", token=SECRET, send=[{"text": "x" * 5000}]
    )
    assert result["close"]["code"] == 1009
    assert result["close"]["reason"] == "message too big"


def test_node_sees_1001_on_shutdown() -> None:
    require_node()  # here, not on the client's thread
    with running(make_app(sources=[QueryToken()])) as srv:
        results: list[dict[str, Any]] = []
        # After the welcome the client just stays connected, until the server stops.
        client = threading.Thread(
            target=lambda: results.append(
                node_client(
                    url=ws_url(srv), source="query", token=SECRET, stay=True, timeoutMs=8000
                )
            )
        )
        client.start()
        assert wait_for(lambda: bool(srv._open), 5)
        srv.shutdown()
        client.join(15)
    assert results[0]["events"] == ["open", {"text": WELCOME}]
    assert results[0]["close"] == {"code": 1001, "reason": "server shutting down"}


# -- refusals a browser can read, and re-authentication --------------------------------

JWT_KEY = "a-jwt-secret-that-is-at-least-32-bytes!"


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, ws: object) -> None:
        self.count += 1
        echo(ws)  # type: ignore[arg-type]


def jwt_token(subject: str = "alice", life: float = 3.0, **claims: object) -> str:
    import jwt

    return jwt.encode(
        {"sub": subject, "exp": time.time() + life, **claims}, JWT_KEY, algorithm="HS256"
    )


def test_readable_refusals_reach_node_as_close_codes(logs: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    app = make_app(
        routes={"/ws": calls},
        readable_refusals={"/ws"},
        sources=[QueryToken(), SubprotocolToken()],
        limiter=FailedAuthLimiter(rate=0.01, burst=20),
    )
    with running(app) as srv:
        result = node_client(
            url=ws_url(srv),
            source="subprotocol",
            token="wrong-token",
            browserOrigin=ORIGIN,
            sendOnOpen="sent right after open",
        )
        assert result["events"] == ["open"]
        assert result["protocol"] == "bearer"
        assert result["close"] == {"code": 4401, "reason": "unauthorized: invalid"}
        # Without an Origin, Node sees the HTTP refusal as always.
        plain = node_client(url=ws_url(srv), source="query", token="wrong-token")
        assert plain["status"] == 401 and "open" not in plain["events"]
        # The limiter counts both kinds: 18 more failures (raw, as a browser would,
        # answering the Close), then the 21st is 4429 for a browser, 429 for the others.
        for _ in range(18):
            raw = exchange(
                srv,
                handshake_bytes("/ws?token=wrong", extra=f"Origin: {ORIGIN}\r\n")
                + frame(0x8, b"\x0f\xa1"),
            )
            assert raw.startswith(b"HTTP/1.1 101 ")
        limited = node_client(
            url=ws_url(srv), source="query", token="wrong-token", browserOrigin=ORIGIN
        )
        assert limited["close"]["code"] == 4429
        assert limited["close"]["reason"].startswith("too many attempts; retry in ")
        assert node_client(url=ws_url(srv), source="query", token="x")["status"] == 429
    assert calls.count == 0
    lines = [r.getMessage() for r in logs.records if r.getMessage().startswith("rejected")]
    assert sum("delivered=close code=4401" in line for line in lines) == 19
    assert any("status=429" in line and "delivered=close code=4429" in line for line in lines)
    assert not any("wrong-token" in line for line in lines)


def test_node_refreshes_a_short_jwt_twice_then_is_closed_at_expiry(
    logs: pytest.LogCaptureFixture,
) -> None:
    from wsauth_sync import JWTVerifier

    app = make_app(
        verifier=JWTVerifier(key=JWT_KEY, algorithms=["HS256"], leeway=0), sources=[BearerToken()]
    )
    with running(app) as srv:
        # The client holds its fresh tokens from the start: each lives 3 s past the
        # moment it is asked for (1.5 s before the previous one expires).
        result = node_client(
            url=ws_url(srv),
            source="bearer",
            token=jwt_token(n=1),
            reauth=[jwt_token(n=2, life=4.5), jwt_token(n=3, life=6.0)],
            stay=True,
            timeoutMs=20000,
        )
    texts = [event["text"] for event in result["events"] if isinstance(event, dict)]
    assert sum('"type": "reauthenticated"' in text for text in texts) == 2
    assert result["close"] == {"code": 1008, "reason": "credential expired"}
    assert result["elapsedMs"] > 5000  # well past the first token's 3 s
    lines = [r.getMessage() for r in logs.records if r.getMessage().startswith("reauth")]
    assert len(lines) == 2 and all(line.startswith("reauthenticated ") for line in lines)
