"""Verifiers: a token in, an :class:`Identity` out, or a refusal.

A verifier is any callable ``token -> Identity``. It raises
:class:`~wsauth_sync.core.errors.InvalidToken` (401) to refuse a token. Any other exception
means "cannot decide now"; the handshake core turns it into a 503 and never into a 101.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .errors import ConfigurationError, InvalidToken


@dataclass(frozen=True)
class Identity:
    """Who authenticated, as the verifier established it.

    Attributes:
        subject: the principal (``sub`` claim, key owner, configured name).
        claims: verified claims or attributes; never unverified request data.
        source: the token source that carried the credential (``"query"``...).
        expires_at: POSIX time at which the credential stops being valid, if known.
        credential_id: a public name of the credential (an API key's id), used to
            find its open connections when it is revoked. Never the secret.
    """

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str = ""
    expires_at: float | None = None
    credential_id: str | None = None

    @property
    def scopes(self) -> frozenset[str]:
        """Granted scopes: ``scopes``/``scp`` lists or a space-separated ``scope`` claim."""
        for name in ("scopes", "scp", "scope"):
            value = self.claims.get(name)
            if isinstance(value, str):
                return frozenset(value.split())
            if isinstance(value, (list, tuple)):
                return frozenset(str(item) for item in value)
        return frozenset()


class RevocationSource(Protocol):
    """A verifier that can tell which credentials were revoked (see :mod:`.keystore`).

    Revocations are read from a log by position, not by time: a position is given by
    the store, so no host's clock is ever compared with another's.
    """

    def revoked_after(self, position: int, /) -> tuple[Iterable[str], int]:
        """Revocations logged after ``position`` (0: all of them).

        Returns:
            Their ``credential_id`` values, and the position to ask from next time.
        """
        ...


class RevocationFeed(Protocol):
    """A channel on which a store announces revocations as they are committed."""

    def wait(self, timeout: float, /) -> bool:
        """Wait up to ``timeout`` s; True if a revocation was announced meanwhile.

        Raises:
            Exception: the channel was lost (announcements may have been missed).
        """
        ...

    def close(self) -> None:
        """Stop listening and release the channel."""
        ...


class Verifier(Protocol):
    """``token -> Identity``, raising :class:`~wsauth_sync.core.errors.InvalidToken` to refuse.

    A verifier may set ``blocking = False`` when it never waits on I/O (a static table,
    a JWT with a configured key); others run under the app's ``verify_timeout``.
    """

    def __call__(self, token: str, /) -> Identity: ...


class NonBlocking(Protocol):
    """A verifier that says whether it may wait on I/O (``blocking``).

    Those that never do (a static table, a JWT with a configured key) are called inline;
    any other verifier runs under the app's ``verify_timeout`` on a time-limited thread.
    """

    blocking: bool


# These two look attributes up with getattr, not isinstance() on a runtime-checkable
# Protocol: since Python 3.12 that isinstance() ignores what a wrapper provides through
# __getattr__, so a delegating wrapper around a key store would silently lose its
# revocation checks on 3.12 and keep them on 3.11. getattr answers alike on every version.


def may_block(verifier: object) -> bool:
    """True unless ``verifier`` declares ``blocking = False`` (see :class:`NonBlocking`)."""
    return bool(getattr(verifier, "blocking", True))


def revocation_source(verifier: object) -> RevocationSource | None:
    """``verifier`` if it reports revocations (a ``revoked_after`` method), else None."""
    if callable(getattr(verifier, "revoked_after", None)):
        return cast(RevocationSource, verifier)
    return None


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest from leaking the length of the
    # configured secrets, and works for any str (compare_digest refuses non-ASCII str).
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class StaticTokens:
    """A fixed set of shared secrets, compared in constant time.

    Pure computation: it never blocks, so it runs inline (no verifier time limit).

    Args:
        tokens: either a mapping ``token -> subject`` or an iterable of tokens, whose
            subjects are then ``token-1``, ``token-2``... in the order given.

    Raises:
        ConfigurationError: no tokens, or an empty token (it would match empty input).
    """

    def __init__(self, tokens: Mapping[str, str] | Iterable[str]) -> None:
        if isinstance(tokens, Mapping):
            pairs = list(tokens.items())
        else:
            pairs = [(token, f"token-{index}") for index, token in enumerate(tokens, 1)]
        if not pairs:
            raise ConfigurationError("StaticTokens needs at least one token")
        if any(not token for token, _ in pairs):
            raise ConfigurationError("an empty static token would accept an empty credential")
        self._entries = [(_digest(token), subject) for token, subject in pairs]

    #: Never waits on I/O: the handshake thread may call it directly.
    blocking = False

    def __call__(self, token: str, /) -> Identity:
        digest = _digest(token)
        subject = None
        # Check every entry, without stopping at a match, so timing says nothing of which.
        for candidate, name in self._entries:
            if hmac.compare_digest(candidate, digest) and subject is None:
                subject = name
        if subject is None:
            raise InvalidToken("unknown_token")
        return Identity(subject=subject)

    def __repr__(self) -> str:
        return f"StaticTokens(<{len(self._entries)} tokens>)"


class CallableVerifier:
    """Adapt a plain function (a database lookup, say) into a verifier.

    The function receives the token and returns an :class:`Identity`, a subject
    string, or ``None`` to refuse the token. An exception inside it becomes a 503.
    """

    def __init__(self, func: Callable[[str], Identity | str | None]) -> None:
        self.func = func

    def __call__(self, token: str, /) -> Identity:
        result = self.func(token)
        if result is None:
            raise InvalidToken("rejected")
        if isinstance(result, Identity):
            return result
        if isinstance(result, str) and result:
            return Identity(subject=result)
        raise TypeError(f"verifier function returned {type(result).__name__}")
