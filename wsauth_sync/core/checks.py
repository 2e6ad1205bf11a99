"""Is it a WebSocket opening handshake for a path we serve? RFC 6455 §4.2.1, item by item.

These are the checks the policy runs first: they cost no verifier work and need nothing
but the request. Each refusal is an error that already knows its status.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection

from .errors import (
    BadRequest,
    HTTPVersionNotSupported,
    MethodNotAllowed,
    NotFound,
    UnsupportedVersion,
    UpgradeRequired,
)
from .request import UpgradeRequest, comma_list


def check_upgrade(request: UpgradeRequest, *, paths: Collection[str]) -> str:
    """Check that ``request`` is a WebSocket opening handshake for a served path.

    Returns:
        The validated ``Sec-WebSocket-Key``.

    Raises:
        MethodNotAllowed: not GET (405, ``Allow: GET``).
        HTTPVersionNotSupported: HTTP/1.0 (505).
        BadRequest: Host, key, version header or body problems, one of these headers
            repeated, on two lines or joined by a comma (400).
        NotFound: the path is not served (404).
        UpgradeRequired: no ``Upgrade: websocket`` / ``Connection: upgrade`` (426).
        UnsupportedVersion: ``Sec-WebSocket-Version`` other than 13 (426).
    """
    if request.method != "GET":
        raise MethodNotAllowed("method_not_allowed")
    if request.http_version != "1.1":
        raise HTTPVersionNotSupported("http_version_not_supported")
    # Host, the key and the version are single values whose grammar has no comma
    # (RFC 9110 §7.2, RFC 6455 §4.2.1 and §11.3.1/§11.3.5): a comma means the header was
    # repeated and a WSGI server joined the copies (RFC 9110 §5.3), so it is refused as a
    # duplicate, as the socket server refuses two lines. A legitimate Host has no comma.
    host = request.get_unlisted("host")
    if host is None or not _valid_host(host):
        raise BadRequest("bad_host")
    if request.path not in paths:
        raise NotFound("unknown_path")
    if "websocket" not in (token.lower() for token in comma_list(request.get_all("upgrade"))):
        raise UpgradeRequired("not_websocket_upgrade")
    if "upgrade" not in (token.lower() for token in comma_list(request.get_all("connection"))):
        raise UpgradeRequired("no_connection_upgrade")
    key = request.get_unlisted("sec-websocket-key")
    if key is None:
        raise BadRequest("missing_key")
    if not _valid_key(key):
        raise BadRequest("bad_key")
    versions = request.get_all("sec-websocket-version")
    if not versions:
        raise BadRequest("missing_version")
    # A client sends one version (RFC 6455 §4.2.1 item 6); only the server's 426 lists
    # several, so "13, 8" is two headers joined, not a list to pick from.
    if len(versions) > 1 or "," in versions[0]:
        raise BadRequest("duplicate_version")
    if versions[0].strip() != "13":
        raise UnsupportedVersion("unsupported_version")
    if request.declares_body:
        raise BadRequest("request_body")
    return key


def _valid_key(key: str) -> bool:
    # RFC 6455 §4.2.1 item 5: base64 of 16 bytes. Padding bits are not required to be
    # zero (browsers' keys always are, the WHATWG example is not).
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _valid_host(host: str) -> bool:
    # Host names with "xn--" labels must be valid IDNA; a bad one once crashed wsproto.
    if not host or "xn--" not in host.lower():
        return bool(host)
    try:
        host.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True
