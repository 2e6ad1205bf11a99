"""The ``wsauth-sync echo`` command, run as a real subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from helpers import SECRET, ServerProcess
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync.echo import WELCOME


@contextlib.contextmanager
def echo_command(*args: str, program: list[str] | None = None) -> Iterator[ServerProcess]:
    command = (program or [sys.executable, "-m", "wsauth_sync"]) + [
        "echo", "--port", "0", *args]
    running = ServerProcess(command)
    try:
        yield running
    finally:
        running.stop()


def expect(server: ServerProcess, prefix: str) -> str:
    """The rest of the output line that starts with ``prefix`` (bounded wait)."""
    return server.expect("^" + re.escape(prefix) + "(.*)$").group(1)


def test_demo_token_url_is_printed_and_serves_one_echo() -> None:
    with echo_command() as server:
        listening = expect(server, "Listening on ")
        assert listening.startswith("ws://127.0.0.1:") and listening.endswith("/ws")
        url = expect(server, "Connect with: ")
        assert url.startswith(listening + "?token=")
        with connect(url, open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("from the cli test")
            assert ws.recv(timeout=5) == "You said: from the cli test"
        with pytest.raises(InvalidStatus) as info:
            connect(listening, open_timeout=5)
        assert info.value.response.status_code == 401
        demo_token = url.split("?token=", 1)[1]
        assert len(demo_token) >= 32
    assert server.process.returncode == 0
    # The token is printed once, on purpose, in the "Connect with" line; logs never show it.
    log = "\n".join(line for line in server.lines
                    if not line.startswith(("Connect with: ", "Browser demo: ")))
    assert "accepted peer=127.0.0.1:" in log
    assert "rejected peer=127.0.0.1:" in log and "reason=missing_token" in log
    assert demo_token not in log


def test_static_tokens_and_options() -> None:
    with echo_command("--token", SECRET, "--token", "second-token-value", "--path", "/chat",
                      "--source", "bearer", "--max-message-size", "100") as server:
        listening = expect(server, "Listening on ")
        assert listening.endswith("/chat")
        with connect(listening, additional_headers={"Authorization": "Bearer second-token-value"},
                     open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("x" * 200)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        with pytest.raises(InvalidStatus) as refused:  # query source not enabled
            connect(f"{listening}?token={SECRET}", open_timeout=5)
        assert refused.value.response.status_code == 401
    assert all(SECRET not in line for line in server.lines)


def test_jwt_secret_flag() -> None:
    secret = "j" * 32
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60, "aud": "echo"}, secret,
                       algorithm="HS256")
    with echo_command("--jwt-secret", secret, "--jwt-audience", "echo") as server:
        listening = expect(server, "Listening on ")
        with connect(listening, subprotocols=["bearer", token],  # type: ignore[list-item]
                     open_timeout=5) as ws:
            assert ws.subprotocol == "bearer"
            assert ws.recv(timeout=5) == WELCOME
    assert any("subject=carol" in line for line in server.lines)


def test_console_script_runs_the_same_server() -> None:
    # pip puts the script beside the interpreter, whether or not that is on PATH.
    program = Path(sys.executable).parent / "wsauth-sync"
    assert program.exists(), "the README's install step provides the console script"
    with echo_command("--token", SECRET, program=[str(program)]) as server:
        listening = expect(server, "Listening on ")
        with connect(f"{listening}?token={SECRET}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME


def test_bad_configuration_exits_2_with_a_message() -> None:
    result = subprocess.run([sys.executable, "-m", "wsauth_sync", "echo", "--port", "0",
                             "--jwt-secret", "short"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


def test_cookie_source_with_origin_allowlist() -> None:
    import websocket as wsclient

    with echo_command("--token", SECRET, "--source", "cookie",
                      "--allow-origin", "https://app.example") as server:
        listening = expect(server, "Listening on ")
        ws = wsclient.create_connection(listening, cookie=f"token={SECRET}",
                                        origin="https://app.example", timeout=5)
        try:
            assert ws.recv() == WELCOME
        finally:
            ws.close()
        with pytest.raises(wsclient.WebSocketBadStatusException) as info:
            wsclient.create_connection(listening, cookie=f"token={SECRET}",
                                       origin="https://evil.example", timeout=5)
        assert info.value.status_code == 403
    assert any("reason=origin_not_allowed" in line for line in server.lines)
