"""Per-message CPU of the sans-I/O layers alone: one masked 32-byte text frame in, one out.

    python3 benchmarks/frame_cost.py

Shows where W1's time goes without sockets or threads: wsproto (which wsauth_sync drives)
against the ``websockets`` library's own protocol object (which its sync server drives).
"""

from __future__ import annotations

import os
import timeit

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

PAYLOAD = b"x" * 32
MASK = os.urandom(4)
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + MASK + bytes(
    b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))


def wsproto_round_trip(connection: Connection) -> bytes:
    connection.receive_data(FRAME)
    message = next(iter(connection.events()))
    return connection.send(TextMessage(data="You said: " + message.data))


def websockets_round_trip(protocol: Protocol) -> bytes:
    protocol.receive_data(FRAME)
    frame = protocol.events_received()[0]
    protocol.send_text(b"You said: " + frame.data)
    return b"".join(protocol.data_to_send())


def main() -> None:
    count = 20000
    connection = Connection(ConnectionType.SERVER)
    protocol = Protocol(Side.SERVER, state=OPEN)  # past the handshake: framing only
    for name, call, arg in (("wsproto", wsproto_round_trip, connection),
                            ("websockets", websockets_round_trip, protocol)):
        call(arg)  # warm up
        seconds = min(timeit.repeat(lambda c=call, a=arg: c(a), number=count, repeat=5))
        print(f"{name:>10}: {seconds / count * 1e6:6.1f} µs per message in + reply out")
    assert Frame(Opcode.TEXT, PAYLOAD).data == PAYLOAD


if __name__ == "__main__":
    main()
