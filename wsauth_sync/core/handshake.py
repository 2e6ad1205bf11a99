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

from collections.abc import Callable
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
from .request import Address, UpgradeRequest

# The core's whole decision path is importable from here (and from its old home,
# ``wsauth_sync.handshake``): the policy and its checks live in their own modules.
__all__ = ["DEFAULT_MAX_TOKEN_LENGTH", "DEFAULT_SOURCES", "Accept", "Admit", "Decision",
           "FailureLimiter", "HandshakePolicy", "Rejected", "ServerHandshake",
           "check_upgrade"]

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


class ServerHandshake:
    """The server side of one opening handshake, sans I/O.

    Feed what the socket read to :meth:`receive_data` until it returns a decision. An
    :class:`Accept` is answered with the bytes of :meth:`accept`; a :class:`Rejected`
    already holds its response. The shell owns the clock: when its deadline passes it
    calls :meth:`reject` instead.
    """

    def __init__(self, policy: HandshakePolicy, *, limits: HeadLimits = DEFAULT_HEAD_LIMITS,
                 client: Address | None = None) -> None:
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
        return accept.response or self._reader.accept(key=accept.key,
                                                      subprotocol=accept.subprotocol)

    def respond(self, status: int, reason: str, headers: list[tuple[str, str]],
                body: bytes) -> bytes:
        """Any other complete response to this request (a page a shell serves for a
        plain GET, say), framed by h11 like the rest; the connection closes after it."""
        return self._reader.respond(status, reason, headers, body)

    @property
    def trailing_data(self) -> bytes:
        """Bytes that followed the request head: the client's first frames, if eager."""
        return self._reader.trailing_data

    def reject(self, error: HandshakeError) -> Rejected:
        """Refuse this handshake with ``error``."""
        request = self._request.redacted() if self._request is not None else None
        return Rejected(error, self._reader.reject(error, realm=self.policy.realm), request)


#: What :meth:`ServerHandshake.decide` returns; each carries the bytes that answer it.
Decision = Union[Accept, Rejected]  # a runtime alias: "|" needs Python 3.10
