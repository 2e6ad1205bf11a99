"""Socket takeover for uWSGI (``--http-socket``, threaded or ``--gevent``).

uWSGI puts no socket in the environ, but its ``uwsgi`` module (present only inside a
uWSGI worker) names the request's descriptor: :func:`uwsgi_socket` wraps a duplicate
of it. The 101 is then written through ``start_response`` and an empty body, so uWSGI
logs the request as 101 and, its response complete, writes nothing after the WebSocket;
it closes its own descriptor when the request ends.

Two set-ups cannot work and are refused (501, and an ERROR line): a loop engine other
than threads or gevent, and ``--gevent`` without monkey patching, where a blocking read
would stall every greenlet of the worker.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

#: Key naming the uWSGI takeover (never an environ key: uWSGI offers no socket there).
UWSGI_KEY = "uwsgi.connection_fd"


def _uwsgi(environ: dict[str, Any]) -> Any:
    """The ``uwsgi`` module when this request comes from a uWSGI worker, else None."""
    if "uwsgi.version" not in environ:
        return None
    module = sys.modules.get("uwsgi")
    return module if callable(getattr(module, "connection_fd", None)) else None


def _cooperative(module: Any) -> bool:
    """True when a plain socket read cannot stall other requests of this worker."""
    loop = getattr(module, "loop", None)
    if loop is None:
        return bool(getattr(module, "has_threads", 1))  # threads: timers can run
    if loop != b"gevent":
        return False
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def uwsgi_socket(environ: dict[str, Any]) -> socket.socket | None:
    """A socket on a duplicate of this uWSGI request's descriptor, or None.

    None outside uWSGI and in the set-ups that cannot work (see the module docstring).
    The caller closes the returned socket; uWSGI closes the original.
    """
    module = _uwsgi(environ)
    if module is None or not _cooperative(module):
        return None
    # socket.socket is gevent's cooperative class once monkey-patched.
    return socket.socket(fileno=os.dup(module.connection_fd()))


def uwsgi_unpatched(environ: dict[str, Any]) -> bool:
    """True for uWSGI ``--gevent`` without monkey patching (to say so in the log)."""
    module = _uwsgi(environ)
    return (
        module is not None
        and getattr(module, "loop", None) == b"gevent"
        and not _cooperative(module)
    )


def write_head(start_response: Callable[..., Any], response: bytes) -> None:
    """Have uWSGI send ``response``, a complete ``101`` head built by the core.

    The head is ours (wsproto's), so splitting it on CRLF is safe; uWSGI writes the
    status line for the request's HTTP version and the headers as given.
    """
    lines = response.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 1)[1]
    headers = [
        (name, value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    write = start_response(status, headers)
    write(b"")  # an empty write flushes the head now, before any frame
