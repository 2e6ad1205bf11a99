"""CPU of one echo round trip through ``WebSocket`` against wsproto over the same socket.

    python3 benchmarks/connection_cost.py

One thread, a socket pair, no load generator: the client half writes a masked frame, the
server half receives the message and sends the reply, the client reads it. The floor is
the same loop driving wsproto's ``Connection`` directly (one ``recv``, wsproto, one
``send``), so the difference is wsauth_sync's own per-message work (locks, outbox, message
assembly, limits) without thread hand-offs or scheduling noise.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from frame_cost import LARGE, SMALL, Workload, masked_frame, per_call
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from wsauth_sync.connection import WebSocket
from wsauth_sync.core.handshake import Accept
from wsauth_sync.core.request import UpgradeRequest
from wsauth_sync.core.verifiers import Identity


def fragmented_frames(count: int = 1000, size: int = 64) -> bytes:
    """W6's message: ``count`` text fragments of ``size`` bytes (Autobahn 9.3.x's shape)."""
    return b"".join(
        masked_frame(b"y" * size, opcode=1 if i == 0 else 0, fin=i == count - 1)
        for i in range(count)
    )


def _pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def _read_reply(client: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        got += len(client.recv(size - got))


def _reply_size(workload: Workload) -> int:
    size = len(workload.payload) + (len("You said: ") if workload.text else 0)
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def ours(workload: Workload, frames: bytes | None = None) -> Callable[[], None]:
    client, server = _pair()
    accept = Accept(
        request=UpgradeRequest("GET", "/ws", ()),
        identity=Identity("bench"),
        subprotocol=None,
        key="",
    )
    ws = WebSocket(server, accept=accept, ping_interval=None)
    frame = frames or masked_frame(workload.payload, opcode=1 if workload.text else 2)
    reply = _reply_size(workload)

    def run() -> None:
        client.sendall(frame)
        message = ws.recv()
        ws.send(f"You said: {message}" if isinstance(message, str) else message)
        _read_reply(client, reply)

    return run


def bare_wsproto(workload: Workload, frames: bytes | None = None) -> Callable[[], None]:
    client, server = _pair()
    connection = Connection(ConnectionType.SERVER)
    frame = frames or masked_frame(workload.payload, opcode=1 if workload.text else 2)
    reply = _reply_size(workload)

    def run() -> None:
        client.sendall(frame)
        parts: list[Any] = []
        done = False
        while not done:
            connection.receive_data(server.recv(len(frame)))  # the ideal read size
            for event in connection.events():
                parts.append(event.data)  # type: ignore[attr-defined]
                done = event.message_finished  # type: ignore[attr-defined]
        data = parts[0] if len(parts) == 1 else type(parts[0])().join(parts)
        out = TextMessage(data="You said: " + data) if workload.text else BytesMessage(data=data)
        server.sendall(connection.send(out))
        _read_reply(client, reply)

    return run


def main() -> None:
    for workload, count in ((SMALL, 20000), (LARGE, 1000)):
        floor = per_call(bare_wsproto(workload), count)
        mine = per_call(ours(workload), count)
        print(workload.name)
        print(f"  wsproto over the socket: {floor:7.1f} µs")
        print(
            f"  WebSocket:               {mine:7.1f} µs  (+{mine - floor:.1f} µs, "
            f"{mine / floor:.2f}x)"
        )
    fragmented = Workload("W6: 1,000 text fragments of 64 bytes", True, b"y" * 64000)
    frames = fragmented_frames()
    floor = per_call(bare_wsproto(fragmented, frames), 20) / 1000
    mine = per_call(ours(fragmented, frames), 20) / 1000
    print(fragmented.name)
    print(f"  wsproto over the socket: {floor:7.2f} µs per fragment")
    print(
        f"  WebSocket:               {mine:7.2f} µs per fragment (+{mine - floor:.2f} µs, "
        f"{mine / floor:.2f}x)"
    )


if __name__ == "__main__":
    main()
