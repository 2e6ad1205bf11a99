"""The limits of an open WebSocket, as one frozen value (documented here, once).

A :class:`~wsauth_sync.config.WebSocketApp` holds one :class:`ConnectionLimits` and every
:class:`~wsauth_sync.connection.WebSocket` it opens reads its limits from it. Each default
is the safe one; RFC 6455 §10.4 asks servers to bound what a peer can make them hold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .core.errors import ConfigurationError

#: Largest message accepted by default (websockets uses the same): 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: How long to wait for the peer's Close after sending ours (RFC 6455 §7.1.1).
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Frames one message may span (RFC 6455 §10.4: floods of tiny fragments).
DEFAULT_MAX_FRAGMENTS = 1024
#: Keepalive: ping this often, give up (1011) if the Pong is not back this long after.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
#: A send during which the peer takes no data for this long fails the connection.
DEFAULT_SEND_TIMEOUT = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one open connection may cost, and how long it may wait for its peer.

    Attributes:
        max_message_size: bytes per incoming message, counted across fragments (text in
            UTF-8 bytes); more closes with 1009.
        max_fragments: frames one message may span; more closes with 1009.
        close_timeout: seconds to wait for the peer's Close after ours before dropping TCP.
        ping_interval: seconds between keepalive Pings; None disables keepalive.
        ping_timeout: seconds to wait for the Pong that answers a Ping; then close 1011.
        send_timeout: seconds a send may wait while the peer takes no data; then TCP is
            dropped and the send raises ``ConnectionClosed`` (1006).
        idle_timeout: seconds without a message from the peer before closing with 1001;
            None (the default) never.
        close_on_expiry: close with 1008 when the credential's ``expires_at`` passes.

    Raises:
        ConfigurationError: a size that is not a positive integer, or a time that is not
            a positive, finite number of seconds.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_fragments: int = DEFAULT_MAX_FRAGMENTS
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    idle_timeout: float | None = None
    close_on_expiry: bool = True

    def __post_init__(self) -> None:
        if any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1
            for n in (self.max_message_size, self.max_fragments)
        ):
            raise ConfigurationError("max_message_size and max_fragments must be positive")
        times = {
            "close_timeout": self.close_timeout,
            "ping_timeout": self.ping_timeout,
            "send_timeout": self.send_timeout,
            "ping_interval": self.ping_interval,
            "idle_timeout": self.idle_timeout,
        }
        for name, value in times.items():
            if value is None and name in ("ping_interval", "idle_timeout"):
                continue
            # NaN compares false with everything, so "<= 0" alone would let it through.
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")

    @classmethod
    def from_options(
        cls, base: ConnectionLimits | None, options: Mapping[str, Any]
    ) -> ConnectionLimits:
        """``base`` with the fields named in ``options`` replaced (the flat keyword
        arguments of 0.1); unknown names are a TypeError, as for any keyword."""
        limits = base or cls()
        fields = {field.name for field in dataclasses.fields(cls)}
        wanted = {name: value for name, value in options.items() if name in fields}
        return dataclasses.replace(limits, **wanted) if wanted else limits


#: The limits every connection gets unless told otherwise.
DEFAULT_LIMITS = ConnectionLimits()
