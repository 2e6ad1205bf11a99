"""Node's ``ws`` package, the library the Express pattern is built on, as the client.

``tests/node`` holds the client script and its lockfile; the README's test command runs
``npm ci`` there.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import SECRET, main_python_only, make_app, running, wait_for, ws_url

from wsauth_sync import BearerToken, CookieToken, QueryToken, SubprotocolToken, WebSocketServer
from wsauth_sync.echo import WELCOME

pytestmark = main_python_only("Node's ws package")
NODE_DIR = Path(__file__).resolve().parent / "node"
ORIGIN = "https://app.example"


def node_client(**options: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node and (NODE_DIR / "node_modules" / "ws").is_dir(), \
        "node and the ws package are installed by tests/install-system-deps.sh"
    completed = subprocess.run([node, str(NODE_DIR / "client.mjs"), json.dumps(options)],
                               capture_output=True, text=True, timeout=30, cwd=NODE_DIR)
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout))


@pytest.fixture(scope="module")
def server() -> WebSocketServer:
    app = make_app(sources=[QueryToken(), BearerToken(), SubprotocolToken(), CookieToken()],
                   allowed_origins=[ORIGIN], allow_missing_origin=True,
                   max_message_size=4096)
    with running(app) as srv:
        yield srv  # type: ignore[misc]


@pytest.mark.parametrize("source", ["query", "bearer", "subprotocol", "cookie"])
def test_each_source_text_and_binary_echo(server: WebSocketServer, source: str) -> None:
    payload = bytes(range(256))
    result = node_client(url=ws_url(server), source=source, token=SECRET, origin=ORIGIN,
                         send=[{"text": "from node"},
                               {"binary": base64.b64encode(payload).decode()}],
                         closeCode=4001)
    assert result["events"] == ["open", {"text": WELCOME}, {"text": "You said: from node"},
                                {"binary": base64.b64encode(payload).decode()}]
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
    result = node_client(url=ws_url(server), source="cookie", token=SECRET,
                         origin="https://evil.example")
    assert result["status"] == 403


def test_server_close_codes_reach_node(server: WebSocketServer) -> None:
    result = node_client(url=ws_url(server), source="bearer", token=SECRET,
                         send=[{"text": "x" * 5000}])
    assert result["close"]["code"] == 1009
    assert result["close"]["reason"] == "message too big"


def test_node_sees_1001_on_shutdown() -> None:
    with running(make_app(sources=[QueryToken()])) as srv:
        results: list[dict[str, Any]] = []
        # After the welcome the client just stays connected, until the server stops.
        client = threading.Thread(target=lambda: results.append(node_client(
            url=ws_url(srv), source="query", token=SECRET, stay=True, timeoutMs=8000)))
        client.start()
        assert wait_for(lambda: bool(srv._open), 5)
        srv.shutdown()
        client.join(15)
    assert results[0]["events"] == ["open", {"text": WELCOME}]
    assert results[0]["close"] == {"code": 1001, "reason": "server shutting down"}
