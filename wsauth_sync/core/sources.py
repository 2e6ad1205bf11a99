"""Token sources: where in the opening handshake a token may travel.

A source is one small object: call it with an :class:`UpgradeRequest` and it returns the
token string, ``None`` when its carrier is absent, or raises a :class:`HandshakeError`
when the carrier is present but malformed. Browsers cannot set headers on a WebSocket
handshake, so they use :class:`QueryToken`, :class:`CookieToken` or
:class:`SubprotocolToken`; other clients can use :class:`BearerToken`.

:func:`find_token` runs several sources and enforces RFC 6750 §2: a client uses exactly
one method per request, so a token found in two places is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from .errors import InvalidAuthRequest, InvalidToken, MissingToken
from .request import UpgradeRequest, redact_query


class TokenSource:
    """Base of the token sources; subclasses implement :meth:`__call__`."""

    #: Stable name recorded on the :class:`~wsauth_sync.Identity` and in logs.
    name = "source"

    def __call__(self, request: UpgradeRequest) -> str | None:
        """Return the token carried by ``request``, or ``None`` if this carrier is absent."""
        raise NotImplementedError

    def redact(self, request: UpgradeRequest) -> UpgradeRequest:
        """Return ``request`` with this source's carrier hidden (default: unchanged).

        It runs for refused requests too, malformed carriers included, so it must not
        raise: hide whatever might be a token.
        """
        return request

    def response_subprotocol(self, request: UpgradeRequest) -> str | None:
        """A subprotocol the response must select when this source carried the token."""
        return None


class QueryToken(TokenSource):
    """Token in the URL query, ``/ws?token=...``: what a browser can always send.

    URLs end up in proxy and access logs (RFC 6750 §5.3), which is why every stored or
    logged target has this parameter redacted.
    """

    name = "query"

    def __init__(self, *, param: str = "token") -> None:
        self.param = param

    def __call__(self, request: UpgradeRequest) -> str | None:
        if not request.query:
            return None
        # Only "&" separates parameters (CVE-2021-23336): "a;token=b" is one value.
        values = parse_qs(request.query, keep_blank_values=True, separator="&").get(self.param)
        if values is None:
            return None
        if len(values) > 1:
            raise InvalidAuthRequest("duplicate_query_token", source=self.name)
        return values[0]

    def redact(self, request: UpgradeRequest) -> UpgradeRequest:
        return request.replace(target=redact_query(request.target, [self.param]))


class BearerToken(TokenSource):
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1); the scheme is case-insensitive.

    Other schemes (``Basic``, ``Negotiate``) count as "no token here".
    """

    name = "bearer"

    def __call__(self, request: UpgradeRequest) -> str | None:
        values = request.get_all("authorization")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidAuthRequest("duplicate_authorization", source=self.name)
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        credentials = credentials.strip()
        if not credentials or " " in credentials:
            raise InvalidAuthRequest("malformed_authorization", source=self.name)
        return credentials


class CookieToken(TokenSource):
    """Token in a cookie (default name ``token``).

    Browsers attach cookies to cross-site WebSocket handshakes, so a cookie alone does
    not prove the page is yours: pair this source with an Origin allowlist.
    """

    name = "cookie"

    def __init__(self, *, cookie: str = "token") -> None:
        self.cookie = cookie

    def __call__(self, request: UpgradeRequest) -> str | None:
        # A plain split is linear whatever the input; http.cookies was quadratic on
        # crafted quoted values (CVE-2024-7592) and silently drops what it cannot parse.
        found = []
        for header in request.get_all("cookie"):
            for pair in header.split(";"):
                name, eq, value = pair.strip().partition("=")
                if eq and name.strip() == self.cookie:
                    found.append(value.strip().strip('"'))
        if len(found) > 1:
            raise InvalidAuthRequest("duplicate_cookie_token", source=self.name)
        return found[0] if found else None


class SubprotocolToken(TokenSource):
    """Token in ``Sec-WebSocket-Protocol``, the one header a browser page can set.

    Two forms are understood:

    * marker form: ``new WebSocket(url, ["bearer", token])``; the entry after the marker
      is the token and the response selects the marker;
    * prefixed form: ``"base64url.bearer." + base64url(token)`` as one entry, for tokens
      that are not valid header tokens; the client must also offer a subprotocol the
      server selects.

    The token entry is never echoed and is removed from the request given to handlers.
    """

    name = "subprotocol"

    def __init__(
        self, *, marker: str | None = "bearer", prefix: str | None = "base64url.bearer."
    ) -> None:
        self.marker = marker
        self.prefix = prefix

    def _entries(self, request: UpgradeRequest) -> tuple[str | None, list[tuple[str, str]]]:
        """The offered marker spelling and every ``(entry, token)`` carrying a token."""
        offered = request.subprotocols
        marker_seen = None
        found = []
        for index, entry in enumerate(offered):
            if self._is_marker(entry):
                if index + 1 >= len(offered):
                    raise InvalidAuthRequest("subprotocol_marker_without_token", source=self.name)
                marker_seen = entry
                found.append((offered[index + 1], offered[index + 1]))
            elif self.prefix is not None and entry.startswith(self.prefix):
                found.append((entry, _decode_base64url(entry[len(self.prefix) :], self.name)))
        return marker_seen, found

    def _is_marker(self, entry: str) -> bool:
        return self.marker is not None and entry.lower() == self.marker.lower()

    def __call__(self, request: UpgradeRequest) -> str | None:
        _, found = self._entries(request)
        if len(found) > 1:
            raise InvalidAuthRequest("several_subprotocol_tokens", source=self.name)
        return found[0][1] if found else None

    def redact(self, request: UpgradeRequest) -> UpgradeRequest:
        # Every entry that would carry a token goes, read leniently (no decoding, no
        # error for a marker with nothing after it): a refused request is redacted too.
        offered = request.subprotocols
        carriers = {
            entry
            for index, entry in enumerate(offered)
            if (index > 0 and self._is_marker(offered[index - 1]))
            or (self.prefix is not None and entry.startswith(self.prefix))
        }
        return request.without_subprotocols(carriers) if carriers else request

    def response_subprotocol(self, request: UpgradeRequest) -> str | None:
        # Echo the client's own spelling: browsers compare case-sensitively.
        marker_seen, _ = self._entries(request)
        return marker_seen


def encode_subprotocol_token(token: str, *, prefix: str = "base64url.bearer.") -> str:
    """The prefixed single-entry form of ``token``: base64url without padding."""
    encoded = base64.urlsafe_b64encode(token.encode("utf-8")).rstrip(b"=").decode("ascii")
    return prefix + encoded


def _decode_base64url(data: str, source: str) -> str:
    try:
        # validate=True: stray characters are an error, not silently dropped.
        standard = data.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(standard + "=" * (-len(data) % 4), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidToken("bad_base64url", source=source) from None


@dataclass(frozen=True)
class FoundToken:
    """A token and the source that carried it."""

    value: str
    source: TokenSource


def find_token(request: UpgradeRequest, sources: Sequence[TokenSource]) -> FoundToken:
    """Run every source and return the single token the request carries.

    Raises:
        MissingToken: no source found a token (401, bare challenge).
        InvalidAuthRequest: more than one source found one (400, RFC 6750 §2), or a
            carrier was malformed.
    """
    found = []
    for source in sources:
        value = source(request)
        if value is not None:
            found.append(FoundToken(value, source))
    if not found:
        raise MissingToken("missing_token")
    if len(found) > 1:
        raise InvalidAuthRequest(
            "token_in_several_places", source=",".join(f.source.name for f in found)
        )
    return found[0]
