"""Whole messages from wsproto's pieces, under the size limits wsproto does not have.

wsproto hands a message over in pieces as frames arrive (text already decoded) and
bounds neither its size nor its number of frames. RFC 6455 §10.4 leaves both to the
endpoint; here both are counted across fragments, the size in payload bytes.
"""

from __future__ import annotations

from typing import Any, Union

from wsproto.events import Message, TextMessage

Data = Union[str, bytes]  # a runtime alias: "|" needs Python 3.10


class MessageTooBig(Exception):
    """The message passed ``max_size`` bytes or ``max_fragments`` frames (close 1009)."""


class MessageAssembler:
    """Collects one message at a time from wsproto's :class:`Message` events.

    Args:
        max_size: payload bytes per message, across fragments.
        max_fragments: frames per message.
    """

    def __init__(self, *, max_size: int, max_fragments: int) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        self.clear()

    def add(self, event: Message[Any]) -> Data | None:
        """Add one piece; the whole message once its last piece arrived, else None.

        Raises:
            MessageTooBig: the limits were passed; nothing of the message is kept.
        """
        chunk = event.data
        if event.message_finished and not self._parts and not self._fragments:
            return self._whole(chunk)  # the usual case: a message in one frame
        # wsproto decodes text, but the limit is on payload bytes: count its UTF-8 bytes
        # (a character split across pieces is held back by wsproto's decoder and counted
        # with the next one). ASCII needs no encoding.
        if isinstance(chunk, str) and not chunk.isascii():
            self._size += len(chunk.encode("utf-8", "surrogatepass"))
        else:
            self._size += len(chunk)
        self._fragments += event.frame_finished
        if self._size > self.max_size or self._fragments > self.max_fragments:
            self.clear()
            raise MessageTooBig
        if chunk:
            self._parts.append(chunk)
        if not event.message_finished:
            return None
        parts = self._parts
        self.clear()
        if isinstance(event, TextMessage):
            return "".join(parts) if len(parts) != 1 else parts[0]
        return b"".join(parts) if len(parts) != 1 else bytes(parts[0])

    def _whole(self, chunk: Data) -> Data:
        """A message that came in a single frame: the same limits, nothing to join."""
        if isinstance(chunk, str):
            size = len(chunk) if chunk.isascii() else len(chunk.encode("utf-8", "surrogatepass"))
            if size > self.max_size:
                raise MessageTooBig
            return chunk
        if len(chunk) > self.max_size:
            raise MessageTooBig
        return bytes(chunk)

    def clear(self) -> None:
        """Drop a partial message (the connection ended): its memory goes with it."""
        self._parts: list[Any] = []
        self._size = 0
        self._fragments = 0
