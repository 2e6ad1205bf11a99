"""Socket I/O under an open WebSocket: reads may wait, writes never do.

Several threads touch one connection: the handler's (reading and sending), any thread
the handler sends from, and the shared timer thread (pings, closes). Writes here are
non-blocking and report how much the kernel took, so the caller decides how long to wait
for buffer space: a peer that stops reading holds a sender for a bounded time only, and
the timer thread not at all.

On TLS one ``SSL`` object carries both directions, and OpenSSL does not document a
concurrent ``SSL_read`` and ``SSL_write`` on it as safe. So a TLS socket is made
non-blocking and every call into it is serialized by one lock held for that call only;
every wait (``poll``) happens outside the lock, so a reader waiting for data never holds
it, nor does a writer waiting for buffer space.
"""

from __future__ import annotations

import _socket
import array
import contextlib
import fcntl
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections import deque

# Largest slice handed to one TLS write: a TLS write that must be retried is retried with
# the same slice, and progress is seen at least this often. Plain TCP takes partial writes,
# so a whole frame goes in one call (a 64 KiB message with its header is one send, not two).
_TLS_WRITE_CHUNK = 64 * 1024
_TCP_WRITE_CHUNK = 16 * 1024 * 1024

# A connection that has just received waits for its next message in recv itself, for at
# most this long (the socket's SO_RCVTIMEO): one system call per message, where poll then
# recv makes two and, with many threads, two hand-offs of the GIL. After that long without
# data it waits in poll again, which holds no read buffer while the connection is idle.
_BUSY_WAIT = 1.0
_BUSY_WAIT_OPTION = struct.pack("ll", int(_BUSY_WAIT), int(_BUSY_WAIT % 1 * 1e6))
# The kernel ends that wait late, by up to an eighth of it (Linux rounds the timeout up to
# its timer wheel's granularity, kernel/time/timer.c): a deadline nearer than this keeps
# the poll, which wakes on time.
_BUSY_WAIT_LONGEST = _BUSY_WAIT * 9 / 8


def open_transport(sock: socket.socket) -> Transport:
    """The transport for an accepted connection: TLS-aware when ``sock`` is TLS."""
    if isinstance(sock, ssl.SSLSocket):
        return TlsTransport(sock)
    return Transport(sock)


class Transport:
    """Plain TCP: the kernel serializes a concurrent recv and send on one socket itself.

    Reads block (the reader is alone: the connection's read lock); writes pass
    ``MSG_DONTWAIT``, so one socket serves both without switching modes.
    """

    write_chunk = _TCP_WRITE_CHUNK

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        self.sock = sock
        self._count = array.array("i", [0])  # FIONREAD's answer
        # Only a real socket: a green one (gevent, eventlet) waits in its hub, where the
        # kernel's receive timeout does not apply; it keeps the plain blocking read.
        self._real = isinstance(sock, _socket.socket)
        self._busy = False  # received lately: the next read may wait in recv
        self._busy_wait_set = False

    def read(self, size: int, deadline: float | None) -> bytes:
        """Wait for data until ``deadline`` (None: for ever); ``b""`` at end of stream.

        Raises:
            TimeoutError: nothing arrived before ``deadline``.
        """
        if not self._real:
            if deadline is not None and not _poll(self.sock, select.POLLIN, deadline):
                raise TimeoutError("no data before the timeout")
            return self._recv(size)
        if self._busy and (deadline is None or deadline - time.monotonic() > _BUSY_WAIT_LONGEST):
            try:
                return self.sock.recv(size)  # back within _BUSY_WAIT_LONGEST, data or not
            except BlockingIOError:
                self._busy = False  # idle: wait in poll from now on
            except OSError:
                return b""
        while True:
            if not _poll(self.sock, select.POLLIN, deadline):
                raise TimeoutError("no data before the timeout")
            try:
                data = self.sock.recv(size)
                break
            except BlockingIOError:
                continue  # ready, yet nothing to read after all: wait again
            except OSError:
                return b""
        self._busy = bool(data) and self._bound_busy_wait()
        return data

    def _bound_busy_wait(self) -> bool:
        """Set the receive timeout that ends a busy wait, once; False if it cannot be."""
        if not self._busy_wait_set:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _BUSY_WAIT_OPTION)
            except OSError:  # without it recv could outwait a deadline: the plain read
                self._real = False
                return False
            self._busy_wait_set = True
        return True

    def _recv(self, size: int) -> bytes:
        try:
            return self.sock.recv(size)
        except OSError:
            return b""  # reset or shut down locally: same as end of stream

    def read_nowait(self, size: int) -> bytes | None:
        """What has arrived (``b""`` at end of stream), or None if nothing has."""
        try:
            return self.sock.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def read_arrived(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of what has already arrived, without waiting (may be b"").

        Sized by what the kernel holds (``FIONREAD``), so a message that arrived whole
        is read whole, without allocating a large buffer for a small read.
        """
        try:
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, self._count)
        except OSError:
            return b""
        count = min(self._count[0], limit)
        return (self.read_nowait(count) or b"") if count > 0 else b""

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Bytes of ``data`` the kernel took now, 0 if its buffer is full.

        Raises:
            OSError: the connection failed (reset, shut down).
        """
        try:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0

    def wait_writable(self, deadline: float) -> None:
        """Wait until a write may make progress, or until ``deadline``."""
        _poll(self.sock, select.POLLOUT, deadline)

    def shutdown(self) -> None:
        """End both directions now; any thread waiting on the socket wakes up."""
        # Shut down rather than close: the thread that owns the socket closes it, so a
        # concurrent recv() wakes up instead of racing a reused file descriptor. The
        # plain socket method: SSLSocket.shutdown would also drop its SSL object while
        # another thread may be using it.
        with contextlib.suppress(OSError):
            if isinstance(self.sock, ssl.SSLSocket):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
            else:  # a green socket (eventlet) is no socket.socket subclass: its own method
                self.sock.shutdown(socket.SHUT_RDWR)


class TlsTransport(Transport):
    """TLS: a non-blocking socket whose SSL calls are serialized by one short lock."""

    write_chunk = _TLS_WRITE_CHUNK

    def __init__(self, sock: ssl.SSLSocket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._tls = sock
        self._ssl_lock = threading.Lock()  # held for one non-blocking SSL call, never a wait
        # TLS may need the other direction to proceed (a read that must send, RFC 8446
        # §4.6.3 key updates; a write that must read): what the last call waited for.
        self._read_waits = select.POLLIN
        self._write_waits = select.POLLOUT

    def read(self, size: int, deadline: float | None) -> bytes:
        while True:
            data = self.read_nowait(size)
            if data is not None:
                return data
            if not _poll(self.sock, self._read_waits, deadline) and deadline is not None:
                raise TimeoutError("no data before the timeout")

    def read_nowait(self, size: int) -> bytes | None:
        with self._ssl_lock:
            try:
                return self.sock.recv(size)
            except ssl.SSLWantReadError:
                self._read_waits = select.POLLIN
                return None
            except ssl.SSLWantWriteError:
                self._read_waits = select.POLLOUT
                return None
            except OSError:
                return b""

    def read_arrived(self, limit: int) -> bytes:
        # What is decrypted already; the rest of the stream is another record's read.
        with self._ssl_lock:
            count = min(self._tls.pending(), limit)
        return (self.read_nowait(count) or b"") if count > 0 else b""

    def write_nowait(self, data: bytes | memoryview) -> int:
        # A write that returned "want" is retried with the same bytes (the caller keeps
        # them at the head of its queue), as OpenSSL requires.
        with self._ssl_lock:
            try:
                return self.sock.send(data)
            except ssl.SSLWantWriteError:
                self._write_waits = select.POLLOUT
                return 0
            except ssl.SSLWantReadError:
                self._write_waits = select.POLLIN
                return 0

    def wait_writable(self, deadline: float) -> None:
        _poll(self.sock, self._write_waits, deadline)


class Outbox:
    """Frames waiting to go out, written in order by whichever thread has the writing turn.

    Threads put whole frames (in the order the protocol produced them) and then flush:
    a sender waits for its own frames with a bound on time without progress; the timer
    thread only flushes what the socket takes at once, and only when no one else is
    writing (whoever is continues with the frames queued behind its own).
    """

    def __init__(self, transport: Transport) -> None:
        self._io = transport
        self._lock = threading.Lock()  # the queue itself; never held across I/O
        self._turn = threading.Lock()  # one writer at a time; held across a bounded wait
        self._frames: deque[bytes] = deque()
        self._pong = b""
        self._queued = 0  # frames ever put (Pongs aside): tickets
        self._written = 0  # of those, frames fully written
        self._head: memoryview | None = None  # the frame being written, what is left of it
        self._head_counts = False
        self._bytes = 0  # bytes the kernel took: progress

    def put(self, frame: bytes) -> int:
        """Queue a frame; returns its ticket for :meth:`flush` and :meth:`written`."""
        with self._lock:
            self._frames.append(frame)
            self._queued += 1
            return self._queued

    def put_pong(self, frame: bytes) -> None:
        """Queue a Pong, replacing one not yet started.

        RFC 6455 §5.5.3 lets an endpoint answer only the most recent Ping, so a Ping
        flood from a peer that does not read costs one queued Pong, not one per Ping.
        """
        with self._lock:
            self._pong = frame

    def written(self, ticket: int) -> bool:
        """True once the frame with ``ticket`` (and everything before it) is written."""
        return self._written >= ticket

    @property
    def pong_waiting(self) -> bool:
        """True while a Pong waits to be written."""
        return bool(self._pong)

    @property
    def pending(self) -> bool:
        """True while anything waits to be written."""
        return bool(self._head is not None or self._pong or self._frames)

    @property
    def tickets(self) -> int:
        """The ticket of the last frame put (flush to it to write everything)."""
        return self._queued

    @property
    def idle(self) -> bool:
        """True while no frame is queued or half-written (a Pong aside: a control frame may
        go between any two frames, RFC 6455 §5.4, and is sent as soon as practical, §5.5.3)."""
        return self._head is None and not self._frames

    def claim(self) -> bool:
        """Take the writing turn if it is free, without waiting.

        Then a frame made while :attr:`idle` is next in order: write it with
        :meth:`write_claimed`, which gives the turn back; otherwise :meth:`release` it.
        """
        return self._turn.acquire(blocking=False)

    def release(self) -> None:
        """Give back a turn taken by :meth:`claim` without writing."""
        self._turn.release()

    def write_claimed(self, frame: bytes, *, no_progress: float) -> bool:
        """With the turn from :meth:`claim`: write ``frame`` without queueing it, as
        :meth:`flush` would (waiting for buffer space, bounded by ``no_progress``), then
        give the turn back. The frame takes no ticket.

        Returns:
            False if the kernel took nothing for ``no_progress`` seconds.

        Raises:
            OSError: the connection failed.
        """
        try:
            count = self._io.write_nowait(frame) if len(frame) <= self._io.write_chunk else 0
            self._bytes += count
            done = count == len(frame)
            if not done:  # the rest goes first, as a queued frame's would
                self._head, self._head_counts = memoryview(frame)[count:], False
                done = self._write_until(self._written, no_progress)
        finally:
            self._turn.release()
        if self._frames or self._pong:
            self.flush_nowait()  # frames others queued meanwhile (a ping from the timer)
        return done

    def flush_nowait(self) -> None:
        """Write what the socket takes now, unless another thread is writing. Never waits.

        Raises:
            OSError: the connection failed.
        """
        while self.pending and self._turn.acquire(blocking=False):
            try:
                done = self._write_some(self._queued)
            finally:
                self._turn.release()
            if not done:
                return  # the socket is full: the next flush goes on from here

    def flush(self, ticket: int, *, no_progress: float, turn_timeout: float = -1) -> bool:
        """Write up to ``ticket`` (and any Pong), waiting for buffer space as needed.

        Args:
            ticket: from :meth:`put`.
            no_progress: give up after this many seconds in which the kernel took nothing.
            turn_timeout: give up if another writer keeps the turn this long (-1: wait;
                that writer is itself bounded by its ``no_progress``).

        Returns:
            False if it gave up; the connection must then be failed.

        Raises:
            OSError: the connection failed.
        """
        if not self._turn.acquire(timeout=turn_timeout):
            return False
        try:
            done = self._write_until(ticket, no_progress)
        finally:
            self._turn.release()
        if self._frames or self._pong:
            self.flush_nowait()  # frames others queued meanwhile (a ping from the timer)
        return done

    def flush_pong(self, *, no_progress: float) -> bool:
        """Write a queued Pong, unless another thread is writing (it writes the Pong next).

        The reading thread answers Pings here: it must not wait for another thread's
        send, whose peer may be waiting for us to read before it reads anything.

        Returns:
            False if the kernel took nothing for ``no_progress`` seconds.

        Raises:
            OSError: the connection failed.
        """
        if not self._pong or not self._turn.acquire(blocking=False):
            return True
        try:
            return self._write_until(self._written, no_progress)
        finally:
            self._turn.release()

    def _write_until(self, ticket: int, no_progress: float) -> bool:
        if self._write_some(ticket):  # the usual case: the kernel takes it all at once
            return True
        deadline = time.monotonic() + no_progress
        while True:
            self._io.wait_writable(deadline)
            before = self._bytes
            if self._write_some(ticket):
                return True
            now = time.monotonic()
            if self._bytes != before:
                deadline = now + no_progress
            elif now >= deadline:
                return False

    def clear(self) -> None:
        """Drop everything queued (the connection ended)."""
        with self._lock:
            self._frames.clear()
            self._pong = b""

    def _write_some(self, ticket: int) -> bool:
        """With the turn: write until ``ticket`` and the Pong are out (True) or the
        socket is full (False)."""
        while True:
            if self._head is None:
                if not self._pong and (self._written >= ticket or not self._frames):
                    # Done, seen without the lock: a frame or Pong put from now on is
                    # written by its own thread's flush, or by flush()'s final pass.
                    return True
                with self._lock:
                    if self._pong:
                        frame, self._pong, self._head_counts = self._pong, b"", False
                    elif self._frames and self._written < ticket:
                        frame, self._head_counts = self._frames.popleft(), True
                    else:
                        return True
                if len(frame) <= self._io.write_chunk:  # usually taken whole, no view
                    count = self._io.write_nowait(frame)
                    self._bytes += count
                    if count == len(frame):
                        self._written += self._head_counts
                        continue
                    self._head = memoryview(frame)[count:]
                    return False
                self._head = memoryview(frame)
            try:
                count = self._io.write_nowait(self._head[: self._io.write_chunk])
            except OSError:
                self._head = None  # the connection is over: keep nothing
                raise
            if not count:
                return False
            self._bytes += count
            self._head = self._head[count:]
            if not self._head:
                self._head = None
                self._written += self._head_counts


def wait_readable(sock: socket.socket, deadline: float) -> bool:
    """Wait until ``sock`` has data (or EOF) to read; False if ``deadline`` passed first."""
    pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes already
    if pending is not None and pending():
        return True
    remaining = max(0.0, deadline - time.monotonic())
    if not hasattr(select, "poll"):
        return _green_readable(sock, remaining)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(remaining * 1000))


def _green_readable(sock: socket.socket, remaining: float) -> bool:
    # eventlet's monkey patching removes select.poll (gevent's swaps in its own); the
    # patched select() waits on the hub, with no FD_SETSIZE limit. But eventlet refuses a
    # second waiter on a socket the handler's green thread is reading, so the timers'
    # "anything there now?" is a peek that never waits.
    if remaining > 0:
        return bool(select.select([sock], [], [], remaining)[0])
    probe = _socket.socket(fileno=sock.fileno())  # the bare, never-green socket
    try:
        probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return True  # data, or b"" at EOF
    except BlockingIOError:
        return False
    except OSError:
        return True  # a pending error: the next recv reports it
    finally:
        probe.detach()


def _poll(sock: socket.socket, events: int, deadline: float | None) -> bool:
    """Wait for ``events`` (or an error or hang-up) until ``deadline``; False if none came."""
    if not hasattr(select, "poll"):  # eventlet: see _green_readable
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readers = [sock] if events & select.POLLIN else []
        writers = [sock] if events & select.POLLOUT else []
        return any(select.select(readers, writers, [sock], timeout))
    poller = select.poll()
    poller.register(sock, events)
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
    return bool(poller.poll(timeout))
