"""Who is asking: the Origin allowlist (RFC 6455 §10.2) and the client's address.

Origins are compared exactly after the normalization RFC 6454 defines (scheme and host
lowercased, default port dropped): no wildcards, no substring matches. The client address
comes from ``X-Forwarded-For`` only when the peer is a configured trusted proxy (an IP
address, or ``"unix"`` for the peer of a Unix-domain socket).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

from .errors import BadRequest, ConfigurationError, Forbidden
from .request import UNIX_PEER, UpgradeRequest, comma_list


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lowercase with the default port dropped, or None.

    RFC 6455 §4.2.2 and RFC 6454 serialize origins this way; anything else (a path,
    credentials, ``null``) is not an origin that can match.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
    ):
        return None
    default = 443 if scheme == "https" else 80
    suffix = "" if port in (None, default) else f":{port}"
    return f"{scheme}://{parts.hostname.lower()}{suffix}"


def check_origin(
    request: UpgradeRequest, *, allowed: frozenset[str] | None, allow_missing: bool = False
) -> None:
    """Enforce the Origin allowlist (exact match after normalization, no wildcards).

    Raises:
        BadRequest: more than one Origin header (RFC 6454 §7.3), also when joined
            into one value with a comma, 400.
        Forbidden: Origin missing (unless allowed), ``null``, or not listed, 403.
    """
    origins = request.get_all("origin")
    # RFC 6454 §7.3: at most one Origin header. Its value is one origin, "null" or a
    # space-separated list, never a comma: a comma is two headers a WSGI server joined.
    if len(origins) > 1 or (origins and "," in origins[0]):
        raise BadRequest("duplicate_origin")
    if allowed is None:
        return
    if not origins:
        if allow_missing:
            return
        raise Forbidden("missing_origin")
    if normalize_origin(origins[0]) not in allowed:
        raise Forbidden("origin_not_allowed")


def client_ip(request: UpgradeRequest, trusted_proxies: frozenset[str]) -> str | None:
    """The client's IP: the peer, or from ``X-Forwarded-For`` when the peer is trusted.

    Walks ``X-Forwarded-For`` from the right, skipping trusted proxies, so a client
    cannot choose its address by sending the header itself (never trusted by default).

    Returns:
        The address, or None when it cannot be known: no peer address, or a Unix-socket
        peer that is not trusted or forwarded no address. Every client behind such a
        peer would otherwise share one failed-authentication budget.
    """
    if request.client is None:
        return None
    peer = request.client[0]
    unix = request.client == UNIX_PEER
    if peer not in trusted_proxies:
        return None if unix else peer
    hops = comma_list(request.get_all("x-forwarded-for"))
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop
    if hops:
        return hops[0]
    return None if unix else peer


def trusted_proxy_set(proxies: Collection[str]) -> frozenset[str]:
    """Validate ``trusted_proxies``: IP addresses, and ``"unix"`` for a Unix-socket peer.

    Raises:
        ConfigurationError: a single string, or an entry that is neither.
    """
    if isinstance(proxies, str):
        raise ConfigurationError("trusted_proxies must be a collection of addresses")
    trusted = set()
    for proxy in proxies:
        if proxy == UNIX_PEER[0]:
            trusted.add(proxy)
            continue
        try:
            # Canonical form, as the socket reports peers ("::1", not "0::1").
            trusted.add(str(ipaddress.ip_address(proxy)))
        except ValueError:
            raise ConfigurationError(
                f"trusted proxy is not an IP address or {UNIX_PEER[0]!r}: {proxy!r}"
            ) from None
    return frozenset(trusted)


def origin_allowlist(origins: Collection[str] | None) -> frozenset[str] | None:
    if origins is None:
        return None
    if isinstance(origins, str):
        raise ConfigurationError("allowed_origins must be a collection of origins")
    normalized = set()
    for origin in origins:
        value = normalize_origin(origin)
        if value is None:
            raise ConfigurationError(f"not an origin (scheme://host[:port]): {origin!r}")
        normalized.add(value)
    return frozenset(normalized)
