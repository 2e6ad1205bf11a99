"""The server side of one opening handshake, sans I/O: bytes (or a parsed request) in,
a decision and the bytes that answer it out.

A shell drives one :class:`ServerHandshake` per connection:

1. :meth:`~ServerHandshake.receive_head` with what it read, until the head is whole
   (:mod:`.http11` parses and bounds it); or :meth:`~ServerHandshake.receive_request` with
   a head another server parsed (a WSGI environ), which gets the same checks;
2. :meth:`~ServerHandshake.decide`: the policy's checks and the verifier
   (:mod:`.policy`), then the shell's own admission (caps, its deadline);
3. the outcome carries its response: the ``101`` of an :class:`Accept`, or the refusal of
   a :class:`Rejected`. The shell writes it, logs (:mod:`.audit`), and runs the handler or
   closes.

The shell owns the clock: when its deadline passes it calls :meth:`~ServerHandshake.reject`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Literal, Union

from .checks import check_upgrade
from .errors import BadRequest, HandshakeError
from .http11 import DEFAULT_HEAD_LIMITS, HeadLimits, RequestReader
from .policy import (
    DEFAULT_MAX_TOKEN_LENGTH,
    DEFAULT_SOURCES,
    Accept,
    FailureLimiter,
    HandshakePolicy,
)
from .readable import PeerClose, close_for
from .request import Address, UpgradeRequest

# The core's whole decision path is importable from here (and from its old home,
# ``wsauth_sync.handshake``): the policy and its checks live in their own modules.
__all__ = [
    "DEFAULT_MAX_TOKEN_LENGTH",
    "DEFAULT_SOURCES",
    "Accept",
    "Admit",
    "ClosedRefusal",
    "Decision",
    "FailureLimiter",
    "HandshakePolicy",
    "Rejected",
    "ServerHandshake",
    "check_upgrade",
]

#: Called with an :class:`Accept` before its 101 is written; raising a HandshakeError
#: turns it into that refusal (a cap reached, a deadline passed).
Admit = Callable[[Accept], None]


@dataclass(frozen=True)
class Rejected:
    """Outcome: send ``response`` (empty if the peer is gone), then close.

    ``request`` is the redacted request when one was parsed, for the log line.
    """

    error: HandshakeError
    response: bytes
    request: UpgradeRequest | None


@dataclass(frozen=True)
class ClosedRefusal(Rejected):
    """Outcome: a refusal a browser can read (see :mod:`.readable`).

    ``response`` is a ``101`` followed by a Close frame carrying ``code`` and the fixed
    ``reason``; nothing else is ever written. The shell writes it, then reads what the
    client sends, discarding it, until the client's Close (:meth:`watch`), and closes.
    A shell that does not know this outcome still refuses: it is a :class:`Rejected`.
    """

    code: int = 0
    reason: str = ""
    frame: bytes = b""

    @property
    def head(self) -> bytes:
        """The ``101`` head alone (for a host that writes heads itself: uWSGI)."""
        return self.response[: len(self.response) - len(self.frame)]

    def watch(self) -> PeerClose:
        """A fresh reader that tells when the client's Close has arrived."""
        return PeerClose(self.code, self.reason)


class ServerHandshake:
    """The server side of one opening handshake, sans I/O.

    Feed what the socket read to :meth:`receive_head` until the head is whole (or give
    :meth:`receive_request` a head another server parsed), then :meth:`decide`. Each
    outcome holds the bytes that answer it: an :class:`Accept` its 101 in ``response``, a
    :class:`Rejected` its refusal. The shell owns the clock: when its deadline passes it
    calls :meth:`reject` instead.
    """

    def __init__(
        self,
        policy: HandshakePolicy,
        *,
        limits: HeadLimits = DEFAULT_HEAD_LIMITS,
        client: Address | None = None,
    ) -> None:
        self.policy = policy
        self._reader = RequestReader(limits=limits, client=client)
        self._request: UpgradeRequest | None = None

    def receive_data(self, data: bytes, *, admit: Admit | None = None) -> Decision | None:
        """Feed bytes (``b""`` at end of stream); None means "need more".

        The same as :meth:`receive_head` followed by :meth:`decide` once the head is whole.
        """
        head = self.receive_head(data)
        return self.decide(admit=admit) if head is True else head

    def receive_head(self, data: bytes) -> Literal[True] | Rejected | None:
        """Parse only: True once the head is whole, a refusal if it is malformed or too
        large, None for "need more". No verifier runs here, so an event loop reading many
        heads at once can call it without waiting on a database or a key server.
        """
        try:
            self._request = self._reader.receive_data(data)
        except HandshakeError as error:
            return self.reject(error)
        return None if self._request is None else True

    def receive_request(self, request: UpgradeRequest) -> Literal[True] | Rejected:
        """Take a head another server parsed (a WSGI environ, ``http.server``): the wire's
        limits and syntax checks apply to it, then :meth:`decide` as for bytes read here.
        """
        try:
            self._request = self._reader.receive_request(request)
        except HandshakeError as error:
            return self.reject(error)
        return True

    @property
    def request(self) -> UpgradeRequest | None:
        """The parsed request (not redacted: for the shell's routing only), once whole."""
        return self._request

    def decide(self, *, admit: Admit | None = None) -> Decision:
        """Decide on the whole head (this may call the verifier).

        Args:
            admit: the shell's last word on an accepted handshake, before its 101 is
                written: it raises a HandshakeError to refuse (caps, deadlines).

        Returns:
            An :class:`Accept` whose ``response`` is the 101, or a :class:`Rejected`.
        """
        request = self._request
        if request is None:
            return self.reject(BadRequest("incomplete_request"))
        try:
            accept = self.policy.decide(request)
            if admit is not None:
                admit(accept)
        except HandshakeError as error:
            return self.reject(error)
        response = self._reader.accept(key=accept.key, subprotocol=accept.subprotocol)
        return replace(accept, response=response)

    def accept(self, accept: Accept) -> bytes:
        """The ``101 Switching Protocols`` of ``accept`` (its ``response``, once decided)."""
        return accept.response or self._reader.accept(
            key=accept.key, subprotocol=accept.subprotocol
        )

    def respond(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> bytes:
        """Any other complete response to this request (a page a shell serves for a
        plain GET, say), framed by h11 like the rest; the connection closes after it."""
        return self._reader.respond(status, reason, headers, body)

    @property
    def trailing_data(self) -> bytes:
        """Bytes that followed the request head: the client's first frames, if eager."""
        return self._reader.trailing_data

    def close_refusal(self, rejected: Rejected, *, paths: Collection[str]) -> ClosedRefusal | None:
        """The refusal as ``101`` then Close(code, reason), when a browser may read it.

        Only for a request on one of ``paths`` that carries an ``Origin`` (a browser; other
        clients read HTTP statuses), whose refusal is about the credential (401, 403 for
        a scope, the limiter's 429: :func:`.readable.close_for`), and whose upgrade is
        valid. The 101 selects a subprotocol when the client offered any, as browsers
        require (never a token entry); when none can be selected there is no point (the
        browser would fail the handshake) and the HTTP refusal stands.

        Returns:
            The readable refusal, or None to send ``rejected`` as it is.
        """
        request = self._request
        close = close_for(rejected.error)
        if (
            request is None
            or close is None
            or request.path not in paths
            or not request.get_all("origin")
        ):
            return None
        try:
            key = check_upgrade(request, paths=(request.path,))
            subprotocol = self._refusal_subprotocol(request)
        except HandshakeError:
            return None
        if request.subprotocols and subprotocol is None:
            return None
        reader = RequestReader(limits=self._reader.limits, client=request.client)
        reader.receive_request(request)  # h11 answers this request afresh: a 101 now
        watch = PeerClose(*close)
        return ClosedRefusal(
            rejected.error,
            reader.accept(key=key, subprotocol=subprotocol) + watch.frame,
            rejected.request,
            code=close[0],
            reason=close[1],
            frame=watch.frame,
        )

    def _refusal_subprotocol(self, request: UpgradeRequest) -> str | None:
        # As for an accepted handshake: the app's own subprotocols first, then the token
        # carrier's marker ("bearer"), chosen only from what the client offered once
        # every token entry is removed (RFC 6455 §4.2.2).
        policy = self.policy
        safe = policy.redact(request)
        carrier = None
        for source in policy.sources:
            carrier = carrier or source.response_subprotocol(request)
        for protocol in policy.subprotocols:
            if protocol in safe.subprotocols:
                return protocol
        return carrier if carrier in safe.subprotocols else None

    def reject(self, error: HandshakeError) -> Rejected:
        """Refuse this handshake with ``error``."""
        request = self.policy.redact(self._request) if self._request is not None else None
        return Rejected(error, self._reader.reject(error, realm=self.policy.realm), request)


#: What :meth:`ServerHandshake.decide` returns; each carries the bytes that answer it.
Decision = Union[Accept, Rejected]  # a runtime alias: "|" needs Python 3.10
