"""Test helpers: a server on 127.0.0.1:0 that always shuts down, raw socket I/O, frames."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO

import h11
import pytest

from wsauth_sync import (
    BearerToken,
    QueryToken,
    StaticTokens,
    SubprotocolToken,
    WebSocketApp,
    WebSocketServer,
)
from wsauth_sync.core.handshake import Decision, ServerHandshake
from wsauth_sync.echo import echo

#: The one valid token of the test apps. Leak checks search for it and its encodings.
SECRET = "s3cret-TOKEN-value_42"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
ALL_SOURCES = (QueryToken(), BearerToken(), SubprotocolToken())


def main_python_only(needs: str) -> pytest.MarkDecorator:
    """Skip under ``WSAUTH_MAIN_ONLY_SKIP=1``, which CI sets for its extra Python versions.

    Tests that drive Chromium, nginx, Node or uWSGI check those programs against the
    library; they run once, on the main Python (``.ci/run``), and the other versions keep
    the rest of the suite.
    """
    return pytest.mark.skipif(
        os.environ.get("WSAUTH_MAIN_ONLY_SKIP") == "1",
        reason=f"needs {needs}: runs on the main Python only",
    )


def make_app(**overrides: object) -> WebSocketApp:
    """The echo app with a static SECRET and every header-free source enabled."""
    options: dict[str, object] = {
        "verifier": StaticTokens({SECRET: "alice"}),
        "sources": ALL_SOURCES,
        "close_timeout": 2.0,
    }
    options.update(overrides)
    routes = options.pop("routes", {"/ws": echo})
    return WebSocketApp(routes, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(app: WebSocketApp | None = None, **server_options: object) -> Iterator[WebSocketServer]:
    """A started server on a free loopback port; shut down and joined on exit."""
    options: dict[str, object] = {"host": "127.0.0.1", "port": 0, **server_options}
    server = WebSocketServer(app or make_app(), **options)  # type: ignore[arg-type]
    with server:
        yield server


def free_port() -> int:
    """A loopback port free right now, for servers that need it in their configuration."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ws_url(server: WebSocketServer, path: str = "/ws") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


def handshake_bytes(target: str = "/ws", *, extra: str = "", key: str = KEY) -> bytes:
    """A valid opening handshake with optional extra header lines (CRLF-terminated)."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode("latin-1")


def connect_raw(server: WebSocketServer, timeout: float = 3.0) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """Everything the server sends until it closes, within ``timeout`` seconds."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exchange(server: WebSocketServer, data: bytes, timeout: float = 3.0) -> bytes:
    """Send ``data`` on a fresh connection and return all bytes until the server closes."""
    with connect_raw(server, timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Parse an HTTP response with h11 (as a client would): status, headers, body."""
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    event = client.next_event()
    assert isinstance(event, (h11.Response, h11.InformationalResponse)), event
    headers = {name.decode().lower(): value.decode() for name, value in event.headers}
    body = b""
    if isinstance(event, h11.Response):
        while True:
            part = client.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            else:
                assert isinstance(part, h11.EndOfMessage), part
                break
    return event.status_code, headers, body


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One client-to-server frame (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frames(sock: socket.socket, count: int, timeout: float = 3.0) -> list[tuple[int, bytes]]:
    """Read ``count`` unmasked server frames as ``(opcode, payload)``."""
    sock.settimeout(timeout)
    buffer = b""
    frames: list[tuple[int, bytes]] = []

    def need(n: int) -> None:
        nonlocal buffer
        while len(buffer) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed while reading frames")
            buffer += data

    while len(frames) < count:
        need(2)
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        offset = 2
        if length == 126:
            need(4)
            length, offset = struct.unpack("!H", buffer[2:4])[0], 4
        elif length == 127:
            need(10)
            length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
        need(offset + length)
        frames.append((opcode, buffer[offset : offset + length]))
        buffer = buffer[offset + length :]
    return frames


def close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


def secret_forms(secret: str = SECRET) -> list[str]:
    """The secret and its base64 / base64url spellings, for leak checks."""
    import base64

    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def wait_for(predicate: object, timeout: float = 3.0) -> bool:
    """Poll a condition (e.g. a log line written by a server thread) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


class ServerProcess:
    """A server run as a subprocess; its stdout and stderr lines are collected."""

    def __init__(
        self, command: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:  # closed at end of output, so no pipe outlives the process
            for line in stream:
                self.lines.append(line.rstrip("\n"))
                self._new.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait (bounded) for an output line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r}; output so far: {self.lines[-20:]}"
                ) from None
            match = re.search(pattern, line)
            if match:
                return match

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL only if it overstays (and then fail)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise
        finally:
            for pump in self._pumps:  # the rest of the output, and the pipes closed
                pump.join(timeout=5)


def open_raw_ws(
    server: WebSocketServer,
    target: str = f"/ws?token={SECRET}",
    *,
    extra: str = "",
    source_ip: str | None = None,
    timeout: float = 3.0,
) -> socket.socket:
    """A raw socket past a successful 101 (the head read byte by byte, nothing more)."""
    sock = socket.create_connection(
        server.address, timeout=timeout, source_address=(source_ip, 0) if source_ip else None
    )
    sock.sendall(handshake_bytes(target, extra=extra))
    read_101(sock)
    return sock


def read_head(sock: socket.socket) -> bytes:
    """A response head, read byte by byte so that nothing after it (the first WebSocket
    frames) is consumed; what arrived, if the server closed first."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            return head
        head += chunk
    return head


def read_101(sock: socket.socket) -> bytes:
    """The head of a ``101 Switching Protocols``; ConnectionError if the server closed."""
    head = read_head(sock)
    if not head.endswith(b"\r\n\r\n"):
        raise ConnectionError(f"closed during the handshake: {head!r}")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return head


def feed(handshake: ServerHandshake, pieces: Iterable[bytes]) -> Decision | None:
    """Feed ``pieces`` to the core until it decides, then the end of the stream if it
    still needs more: what a shell does with the reads of one connection."""
    for piece in pieces:
        if piece:
            result = handshake.receive_data(piece)
            if result is not None:
                return result
    return handshake.receive_data(b"")


def split(data: bytes, step: int) -> list[bytes]:
    """``data`` in pieces of ``step`` bytes, as a slow client sends it."""
    return [data[start : start + step] for start in range(0, len(data), step)]


def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """One complete HTTP response (head + Content-Length body), even on a kept-alive
    connection, within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
