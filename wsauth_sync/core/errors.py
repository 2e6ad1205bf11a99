"""The exception tree: every error knows the answer the client gets.

A rejected handshake is a :class:`HandshakeError`. It carries the HTTP status, any
headers that status requires (RFC 9110 says a 401 carries ``WWW-Authenticate`` and a
426 carries ``Upgrade``), and a stable ``reason`` code for the log. Its message is the
reason code too: no error ever holds a token or a raw header value, so logging one is
always safe. The shells therefore need a single ``except HandshakeError``.
"""

from __future__ import annotations

from http import HTTPStatus

Headers = tuple[tuple[str, str], ...]


class WSAuthError(Exception):
    """Root of every exception raised by wsauth_sync."""


class ConfigurationError(WSAuthError, ValueError):
    """The library was configured in a way that would be unsafe or cannot work."""


class HandshakeError(WSAuthError):
    """The opening handshake is refused; the client gets ``status`` and ``headers``.

    Args:
        reason: stable, token-free code for logs and metrics (``"bad_key"``).
        source: where the token came from, when the failure concerns one.
        detail: extra token-free words for the log only (an exception type name).
    """

    status: int = 400
    headers: Headers = ()
    #: True when the client's credential caused the refusal: it then spends the client's
    #: failed-authentication budget (:class:`~wsauth_sync.guards.FailedAuthLimiter`).
    failed_authentication: bool = False

    def __init__(
        self, reason: str, *, source: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.detail = detail

    @property
    def phrase(self) -> str:
        """The standard reason phrase of the status (``"Unauthorized"``)."""
        return HTTPStatus(self.status).phrase

    def response_headers(self, *, realm: str = "wsauth") -> Headers:
        """Headers the response must carry besides the framing ones.

        Args:
            realm: the protection space named in ``WWW-Authenticate`` challenges.
        """
        return self.headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status})"


class BadRequest(HandshakeError):
    """400: the request is not a well-formed WebSocket opening handshake."""

    status = 400


class NotFound(HandshakeError):
    """404: nothing is served at this path (checked before any token work)."""

    status = 404


class MethodNotAllowed(HandshakeError):
    """405: the opening handshake must be a GET (RFC 6455 §4.2.1 item 1)."""

    status = 405
    headers: Headers = (("Allow", "GET"),)


class UpgradeRequired(HandshakeError):
    """426: not a WebSocket upgrade; RFC 9110 §15.5.22 requires ``Upgrade`` here."""

    status = 426
    headers: Headers = (("Upgrade", "websocket"),)


class UnsupportedVersion(UpgradeRequired):
    """426: an unsupported ``Sec-WebSocket-Version``; RFC 6455 §4.4 names the one we speak."""

    headers: Headers = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))


class URITooLong(HandshakeError):
    """414: the request line is over the configured limit."""

    status = 414


class HeadersTooLarge(HandshakeError):
    """431: a header line, the header count or the whole head is over its limit."""

    status = 431


class HTTPVersionNotSupported(HandshakeError):
    """505: WebSocket needs HTTP/1.1 or later (RFC 6455 §4.2.1 item 1)."""

    status = 505


class AuthenticationFailed(HandshakeError):
    """401: no usable credentials. The challenge follows RFC 6750 §3.

    A request that carried no token gets a bare challenge; a request whose token was
    rejected gets ``error="invalid_token"``. Expired, forged and unknown tokens all get the
    same answer; only ``reason`` (in the log) tells them apart.
    """

    status = 401
    failed_authentication = True
    #: RFC 6750 §3.1 error code, or None when no credentials were presented.
    error: str | None = None

    def response_headers(self, *, realm: str = "wsauth") -> Headers:
        challenge = f'Bearer realm="{realm}"'
        if self.error is not None:
            challenge += f', error="{self.error}"'
        return (("WWW-Authenticate", challenge),)


class MissingToken(AuthenticationFailed):
    """401 without an error code: the request carried no token at all."""


class InvalidToken(AuthenticationFailed):
    """401 ``invalid_token``: a token was presented and rejected."""

    error = "invalid_token"


class InvalidAuthRequest(BadRequest):
    """400 ``invalid_request``: the credentials are ambiguous or malformed (RFC 6750 §3.1)."""

    def response_headers(self, *, realm: str = "wsauth") -> Headers:
        return (("WWW-Authenticate", f'Bearer realm="{realm}", error="invalid_request"'),)


class Forbidden(HandshakeError):
    """403: the client is known but not allowed here (origin, scope)."""

    status = 403


class InsufficientScope(Forbidden):
    """403 ``insufficient_scope``: the credential lacks a scope the path requires."""

    def __init__(
        self,
        reason: str,
        *,
        scopes: tuple[str, ...] = (),
        source: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason, source=source, detail=detail)
        self.scopes = scopes

    def response_headers(self, *, realm: str = "wsauth") -> Headers:
        # RFC 6750 §3.1: name the scopes needed, never the credential.
        scope = " ".join(self.scopes)
        return (
            (
                "WWW-Authenticate",
                f'Bearer realm="{realm}", error="insufficient_scope", scope="{scope}"',
            ),
        )


class RetryLater(HandshakeError):
    """A refusal that says when to try again: ``Retry-After`` (RFC 9110 §10.2.3)."""

    #: Seconds to wait, when the raiser does not say.
    default_retry_after = 1

    def __init__(
        self,
        reason: str,
        *,
        retry_after: int | None = None,
        source: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason, source=source, detail=detail)
        self.retry_after = self.default_retry_after if retry_after is None else retry_after

    def response_headers(self, *, realm: str = "wsauth") -> Headers:
        return (("Retry-After", str(self.retry_after)),)


class TooManyRequests(RetryLater):
    """429: too many failed handshakes (or connections) from this client; retry later."""

    status = 429


class ServiceUnavailable(RetryLater):
    """503: we cannot decide now (verifier down, server full); fail closed, retry later."""

    status = 503
    default_retry_after = 5


class UnverifiableToken(ServiceUnavailable):
    """503 that spends the client's failed-authentication budget.

    The token names a key that is not in the last good key set and the key server cannot
    be asked now: the key may be new, so the answer is "try again", not 401. But the
    client chose that key id, so random ids cost it its budget (then 429) like bad tokens.
    """

    failed_authentication = True


class RequestTimeout(HandshakeError):
    """408: the handshake did not complete before the absolute deadline."""

    status = 408


class NoSocketTakeover(HandshakeError):
    """501: the host WSGI server gives no access to its socket, so no upgrade is possible."""

    status = 501


class ConnectionClosed(WSAuthError):
    """The WebSocket is closed; ``code`` and ``reason`` are what the close frame said.

    ``code`` is 1006 when the TCP connection ended without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}")
        self.code = code
        self.reason = reason
