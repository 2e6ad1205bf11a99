"""The admission flags of ``wsauth-sync echo``, each checked through the command itself.

Connection caps per identity and per address, the pending-handshake caps, trusted
proxies and the send timeout: a broken flag makes one of these fail. Real subprocesses,
raw sockets on 127.0.0.1, bounded waits.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

from helpers import SECRET, handshake_bytes, read_head, read_until_closed, wait_for
from test_cli import echo_command, listening

OTHER = "another-token-for-bob"


def address(server: object) -> tuple[str, int]:
    host, port = listening(server).split("/")[2].split(":")  # type: ignore[arg-type]
    return host, int(port)


def open_ws(
    where: tuple[str, int], token: str, *, extra: str = "", source: str = "127.0.0.1"
) -> tuple[socket.socket, bytes]:
    """A raw handshake; the socket (left open) and the response head."""
    sock = socket.create_connection(where, timeout=5, source_address=(source, 0))
    sock.sendall(handshake_bytes(f"/ws?token={token}", extra=extra))
    return sock, read_head(sock)


@contextlib.contextmanager
def held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_connection_caps_per_identity_and_per_address() -> None:
    with (
        echo_command(
            "--token",
            SECRET,
            "--token",
            OTHER,
            "--max-connections-per-identity",
            "2",
            "--max-connections-per-ip",
            "3",
        ) as server,
        held([]) as socks,
    ):
        where = address(server)
        for _ in range(2):
            sock, head = open_ws(where, SECRET)
            socks.append(sock)
            assert head.startswith(b"HTTP/1.1 101 ")
        sock, head = open_ws(where, SECRET)
        socks.append(sock)
        assert head.startswith(b"HTTP/1.1 429 ") and b"Retry-After: 5" in head
        sock, head = open_ws(where, OTHER)  # another identity, same address: the third
        socks.append(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
        sock, head = open_ws(where, OTHER)  # the fourth from this address
        socks.append(sock)
        assert head.startswith(b"HTTP/1.1 429 ")
        sock, head = open_ws(where, OTHER, source="127.0.0.2")  # another address
        socks.append(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
    assert any(
        "reason=too_many_connections " in line or line.endswith("reason=too_many_connections")
        for line in server.lines
    )
    assert any("reason=too_many_connections_from_ip" in line for line in server.lines)


def test_zero_lifts_the_connection_caps() -> None:
    with (
        echo_command(
            "--token",
            SECRET,
            "--max-connections-per-identity",
            "0",
            "--max-connections-per-ip",
            "0",
        ) as server,
        held([]) as socks,
    ):
        where = address(server)
        for _ in range(70):  # past both defaults (32 and 64)
            sock, head = open_ws(where, SECRET)
            socks.append(sock)
            assert head.startswith(b"HTTP/1.1 101 ")


def test_pending_caps_drop_the_oldest_silent_handshake() -> None:
    with (
        echo_command(
            "--token", SECRET, "--max-pending", "3", "--max-pending-per-ip", "2"
        ) as server,
        held([]) as socks,
    ):
        where = address(server)
        for _ in range(2):
            socks.append(socket.create_connection(where, timeout=5))
        socks.append(socket.create_connection(where, timeout=5))  # third from this address
        assert read_until_closed(socks[0], timeout=3) == b""  # the oldest was dropped
        for n in (2, 3):  # other addresses fill the total; the oldest goes again
            socks.append(
                socket.create_connection(where, timeout=5, source_address=(f"127.0.0.{n}", 0))
            )
        assert wait_for(
            lambda: sum("reason=pending_evicted" in line for line in server.lines) >= 2, timeout=5
        )
        sock, head = open_ws(where, SECRET)  # a real client is still served at once
        socks.append(sock)
        assert head.startswith(b"HTTP/1.1 101 ")


def test_trusted_proxy_flag_gives_each_client_its_own_budget() -> None:
    with echo_command("--token", SECRET, "--trusted-proxy", "127.0.0.1") as server:
        where = address(server)
        statuses = []
        for _ in range(22):
            sock, head = open_ws(where, "wrong", extra="X-Forwarded-For: 198.51.100.7\r\n")
            sock.close()
            statuses.append(int(head.split(b" ", 2)[1]))
        assert statuses[:20] == [401] * 20 and statuses[-1] == 429
        sock, head = open_ws(where, SECRET, extra="X-Forwarded-For: 198.51.100.8\r\n")
        sock.close()
        assert head.startswith(b"HTTP/1.1 101 ")  # another client behind the same proxy


def test_send_timeout_flag_drops_a_client_that_stops_reading() -> None:
    with echo_command(
        "--token", SECRET, "--send-timeout", "0.5", "--max-message-size", str(4 * 1024 * 1024)
    ) as server:
        where = address(server)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a peer that never reads
        sock.settimeout(5)
        sock.connect(where)
        try:
            sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
            # Masked binary messages the echo sends back; nothing is read here.
            payload = b"x" * 65536
            frame = b"\x82\xff" + len(payload).to_bytes(8, "big") + b"\0\0\0\0" + payload
            with contextlib.suppress(OSError):
                for _ in range(200):
                    sock.sendall(frame)
            # Well before the default of 10 s: the flag, not the default, dropped it.
            assert wait_for(
                lambda: any("closed" in line and "code=1006" in line for line in server.lines),
                timeout=4,
            )
        finally:
            sock.close()


def test_a_thousand_connections_opened_at_once_are_all_held() -> None:
    """One client opening 1,000 connections within about a second: every one gets its 101
    (none refused by the pending caps, none reset by a full listen queue)."""
    with (
        echo_command(
            "--token",
            SECRET,
            "--max-connections",
            "4000",
            "--max-connections-per-identity",
            "0",
            "--max-connections-per-ip",
            "0",
        ) as server,
        held([]) as socks,
    ):
        where = address(server)
        request = handshake_bytes(f"/ws?token={SECRET}")
        for _ in range(1000):
            sock = socket.create_connection(where, timeout=10)
            sock.sendall(request)
            socks.append(sock)
        heads = [read_head(sock).split(b"\r\n", 1)[0] for sock in socks]
    assert heads == [b"HTTP/1.1 101 Switching Protocols"] * 1000


def test_sigterm_after_a_burst_of_refusals_always_stops_the_server() -> None:
    """SIGTERM may be handed to any thread; the accept loop must still wake up for it."""
    for _ in range(12):
        with echo_command("--token", SECRET) as server:
            where = address(server)
            for _ in range(25):  # refusals leave pool threads behind to take the signal
                sock, _head = open_ws(where, "wrong")
                sock.close()
            started = time.monotonic()
            assert server.stop(timeout=5) == 0
            assert time.monotonic() - started < 5
