"""Caps on open connections per identity and per client address, shared by every shell.

A server has a fixed number of connection threads. Without these caps one credential
(leaked, or stuck in a reconnect loop) or one host could open all of them, and every
other user would get 503 until those connections ended. Past a cap a new handshake is
refused with 429 and ``Retry-After`` while everyone else keeps being served. The count is
per process, like the server's own connection cap.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection

from .core.errors import ConfigurationError, TooManyRequests

#: Open connections one identity (token subject) may hold at once by default.
DEFAULT_MAX_CONNECTIONS_PER_IDENTITY = 32
#: Open connections one client address may hold at once by default.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 64
#: Seconds a client refused by a cap is told to wait.
RETRY_AFTER = 5


class ConnectionCaps:
    """Counts open connections by identity and by client address, under caps.

    Args:
        per_identity: connections one subject may hold; None for no cap.
        per_address: connections one client address may hold; None for no cap.
        exempt_addresses: addresses never capped (trusted proxies seen without an
            ``X-Forwarded-For``: the address then stands for many clients).
    """

    def __init__(
        self,
        *,
        per_identity: int | None = DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
        per_address: int | None = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        exempt_addresses: Collection[str] = (),
    ) -> None:
        if any(cap is not None and cap < 1 for cap in (per_identity, per_address)):
            raise ConfigurationError("connection caps must be positive (or None)")
        self.per_identity = per_identity
        self.per_address = per_address
        self.exempt_addresses = frozenset(exempt_addresses)
        self._lock = threading.Lock()
        self._identities: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()

    def reserve(self, subject: str, address: str) -> None:
        """Count one more connection for ``subject`` from ``address``.

        Raises:
            TooManyRequests: a cap is reached (429 + ``Retry-After``); nothing counted.
        """
        capped = bool(address) and address not in self.exempt_addresses
        with self._lock:
            if self.per_identity is not None and self._identities[subject] >= self.per_identity:
                raise TooManyRequests("too_many_connections", retry_after=RETRY_AFTER)
            if (
                capped
                and self.per_address is not None
                and self._addresses[address] >= self.per_address
            ):
                raise TooManyRequests("too_many_connections_from_ip", retry_after=RETRY_AFTER)
            self._identities[subject] += 1
            if capped:
                self._addresses[address] += 1

    def release(self, subject: str, address: str) -> None:
        """Forget one connection counted by :meth:`reserve`."""
        with self._lock:
            _decrement(self._identities, subject)
            _decrement(self._addresses, address)


def _decrement(counter: Counter[str], key: str) -> None:
    if counter[key] <= 1:
        counter.pop(key, None)
    else:
        counter[key] -= 1
