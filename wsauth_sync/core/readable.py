"""Refusals a browser can read: ``101`` followed at once by a Close frame.

A browser tells a page nothing about a refused handshake: a 401, a 403 and a server
that is down all surface as a bare ``1006``. RFC 6455 §7.4.2 leaves close codes
4000-4999 to applications, so a path that opts in can answer a *browser's* refusal about
the credential with a completed handshake whose first and only frame is a Close carrying
a code and a fixed reason the page can show ("log in again", "retry in 5 s").

This module holds what that answer may say and nothing else: the codes, the fixed
vocabulary of reasons (never a word from the request or the token), and
:class:`PeerClose`, which reads what the client sends after our Close, discarding it,
until its own Close. The decision to answer so and the bytes of the ``101`` are
:meth:`~wsauth_sync.core.handshake.ServerHandshake.close_refusal`.
"""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection

from .errors import AuthenticationFailed, HandshakeError, InsufficientScope, TooManyRequests

#: 401 as a close code: the credential is missing, invalid or expired.
UNAUTHORIZED = 4401
#: 403 as a close code: the credential lacks a scope this path requires.
FORBIDDEN = 4403
#: 429 as a close code: the client is over its failed-authentication budget.
TOO_MANY_ATTEMPTS = 4429

# Log reason codes a client may be told in so many words; every other refusal of a
# credential is "invalid", exactly as the HTTP 401 says nothing more. "expired" is only
# ever the verdict on a token whose signature held, so it tells a forger nothing.
_PUBLIC_REASONS = {
    "missing_token": "missing",
    "expired": "expired",
    "expired_key": "expired",
    "revoked_key": "revoked",
    "subject_changed": "subject_changed",  # re-authentication only
}


def public_reason(reason: str) -> str:
    """The word a client may see for a log ``reason`` code: missing, expired, revoked
    or invalid (never anything else, whatever a custom verifier put in its error)."""
    return _PUBLIC_REASONS.get(reason, "invalid")


def close_for(error: HandshakeError) -> tuple[int, str] | None:
    """The close code and fixed reason for a refusal about the credential, or None.

    Only 401s, a 403 for a missing scope and the failed-authentication limiter's 429
    qualify: other refusals (a bad request, a foreign Origin, a full server, connection
    caps) keep their HTTP status.
    """
    if isinstance(error, AuthenticationFailed):
        return UNAUTHORIZED, f"unauthorized: {public_reason(error.reason)}"
    if isinstance(error, InsufficientScope):
        return FORBIDDEN, "forbidden: insufficient_scope"
    if isinstance(error, TooManyRequests) and error.reason == "too_many_failures":
        return TOO_MANY_ATTEMPTS, f"too many attempts; retry in {int(error.retry_after)} s"
    return None


class PeerClose:
    """Our Close frame, and a reader of the client's frames that waits for its Close.

    Everything the client sends is parsed only to find the end (RFC 6455 §7.1.1: the
    server waits for the client's Close before ending TCP) and dropped: no message is
    kept or delivered.

    Args:
        code: the close code (4000-4999 for these refusals).
        reason: the fixed reason, at most 123 bytes of UTF-8 (RFC 6455 §5.5).
    """

    def __init__(self, code: int, reason: str) -> None:
        self._ws = Connection(ConnectionType.SERVER)
        self.frame = self._ws.send(CloseConnection(code=code, reason=reason))

    def receive_data(self, data: bytes) -> bool:
        """Feed what the client sent (``b""`` at end of stream); True once it is done:
        its Close arrived, the stream ended, or it broke the framing rules."""
        self._ws.receive_data(data or None)
        return any(isinstance(event, CloseConnection) for event in self._ws.events())
