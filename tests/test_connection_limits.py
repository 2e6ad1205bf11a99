"""Message size counted in bytes, and connections that free their buffers when they end."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    SECRET,
    ServerProcess,
    close_code,
    frame,
    make_app,
    open_raw_ws,
    read_frames,
    running,
    wait_for,
)

from wsauth_sync.echo import WELCOME

EMOJI = "\U0001f600"  # four bytes in UTF-8


def zero_masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame with an all-zero mask: valid, and no per-byte work for big payloads."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + b"\0\0\0\0" + payload


def send_in_writes(sock: socket.socket, data: bytes, size: int = 8192) -> None:
    """Send ``data`` in ``size``-byte writes, stopping quietly if the server closes."""
    with contextlib.suppress(OSError):
        for start in range(0, len(data), size):
            sock.sendall(data[start : start + size])


def closed_with(logs: pytest.LogCaptureFixture, code: int) -> bool:
    return wait_for(
        lambda: any(
            r.getMessage().startswith("closed ") and f"code={code}" in r.getMessage()
            for r in logs.records
        )
    )


def test_three_mebibytes_of_four_byte_characters_close_with_1009(
    logs: pytest.LogCaptureFixture,
) -> None:
    """The limit is on payload bytes (RFC 6455 §10.4), not on decoded characters."""
    payload = (EMOJI * (3 * 1024 * 1024 // 4)).encode()
    with running() as server, open_raw_ws(server) as sock:
        assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]
        send_in_writes(sock, zero_masked(0x1, payload))
        assert closed_with(logs, 1009)


@pytest.mark.parametrize("fragment", [65536, 4099], ids=["64 KiB fragments", "odd split"])
def test_text_size_is_exact_in_bytes_across_fragments(
    logs: pytest.LogCaptureFixture, fragment: int
) -> None:
    """Exactly the limit passes, one byte more closes with 1009, whatever the fragmenting
    (4099-byte fragments cut four-byte characters in two)."""
    limit = 64 * 1024
    exact = (EMOJI * (limit // 4)).encode()
    with running(make_app(max_message_size=limit)) as server:
        for payload, expected in ((exact, None), (exact + b"a", 1009)):
            with open_raw_ws(server) as sock:
                read_frames(sock, 1)
                pieces = [payload[i : i + fragment] for i in range(0, len(payload), fragment)]
                frames = b"".join(
                    zero_masked(0x1 if n == 0 else 0x0, piece, fin=n == len(pieces) - 1)
                    for n, piece in enumerate(pieces)
                )
                send_in_writes(sock, frames)
                if expected is None:
                    opcode, echoed = read_frames(sock, 1, timeout=5)[0]
                    assert (opcode, echoed) == (0x1, b"You said: " + payload)
                else:
                    assert closed_with(logs, expected)


def test_limit_counts_two_byte_characters_in_binary_and_text_alike() -> None:
    limit = 1000
    text = ("\u00e9" * 501).encode()  # 501 characters, 1002 bytes
    with running(make_app(max_message_size=limit)) as server, open_raw_ws(server) as sock:
        read_frames(sock, 1)
        send_in_writes(sock, zero_masked(0x1, text))
        opcode, body = read_frames(sock, 1)[0]
        assert (opcode, close_code(body)) == (0x8, 1009)


# -- memory ---------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def unfinished_message(address: tuple[str, int]) -> None:
    """One connection: a 1000 KiB frame with FIN=0, proof the server read it, then gone."""
    with open_raw_ws(_Address(address), timeout=10) as sock:  # type: ignore[arg-type]
        sock.sendall(zero_masked(0x2, bytes(1000 * 1024), fin=False))
        sock.sendall(frame(0x9, b"sync"))  # a Ping may sit between fragments (§5.4)
        # The welcome, then the Pong: the server has read everything before the Ping.
        assert read_frames(sock, 2, timeout=10)[1] == (0xA, b"sync")


class _Address:
    """Just enough of a server for open_raw_ws: its address."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address


def test_ended_connections_free_their_buffers() -> None:
    """1,500 sequential connections, each leaving 1000 KiB of an unfinished message."""
    server = ServerProcess(
        [sys.executable, "-m", "wsauth_sync", "echo", "--port", "0", "--token", SECRET]
    )
    try:
        url = server.expect(r"Listening on (ws://\S+)").group(1)
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        address = (host, int(port))
        for _ in range(10):  # warm up: threads, arenas, imports
            unfinished_message(address)
        before = rss_bytes(server.process.pid)
        started = time.monotonic()
        count = 0
        while count < 1500 and time.monotonic() - started < 40:
            unfinished_message(address)
            count += 1
        assert count >= 300, "too slow to measure"
        grown = rss_bytes(server.process.pid) - before
        # Kept alive, 300 of them would hold 300 MB.
        print(f"RSS grew by {grown // 2**20} MiB over {count} connections")
        assert grown < 100 * 1024 * 1024, f"RSS grew by {grown // 2**20} MiB over {count}"
    finally:
        assert server.stop() == 0


# -- deliver before failing (RFC 6455 §7.1.7 fails at the bad frame, not at its read) --------


@pytest.mark.parametrize(
    "bad",
    [
        frame(0x1, b"unmasked", mask=False),  # a client frame must be masked: 1002
        bytes([0x80 | 0x40 | 0x1, 0x80]) + b"\0\0\0\0",  # RSV1 without an extension: 1002
        frame(0x1, b"\xff\xfe"),  # invalid UTF-8 in a text frame: 1007
    ],
    ids=["unmasked", "reserved-bit", "invalid-utf8"],
)
def test_a_message_before_a_bad_frame_in_the_same_read_is_answered_first(bad: bytes) -> None:
    with running(make_app()) as server:
        sock = open_raw_ws(server)
        try:
            assert read_frames(sock, 1) == [(0x1, WELCOME.encode())]
            sock.sendall(frame(0x1, b"hello") + bad)  # one write, so one read
            reply, close = read_frames(sock, 2)
            assert reply == (0x1, b"You said: hello")
            assert close[0] == 0x8 and close_code(close[1]) in (1002, 1007)
        finally:
            sock.close()
