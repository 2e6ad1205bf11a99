"""The sans-I/O core: one opening handshake request in, one decision and its bytes out.

Nothing here touches a socket, a thread or a clock; the shells (the threaded server, the
WSGI middleware) read, call the core, write and log. A request flows through:

* :mod:`.http11`: bounded parsing of the head with h11 (or the same checks on a head
  another server parsed), and the bytes of every response;
* :mod:`.checks`: is it a WebSocket opening handshake for a served path (RFC 6455 §4.2.1);
* :mod:`.origin`: the Origin allowlist and the client's address;
* :mod:`.sources`: where the token travels;
* :mod:`.verifiers`: ``token -> Identity``;
* :mod:`.policy`: all of the above in order, cheapest first;
* :mod:`.handshake`: :class:`~.handshake.ServerHandshake`, the one object a shell drives;
* :mod:`.errors` and :mod:`.audit`: every refusal knows its status; one log line each.
"""
