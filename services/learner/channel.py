"""Length-prefixed messages over a socket pair, between the learner and its model process.

The service's side never blocks on a send: a batch larger than the socket's buffer would
block until the model process reads it, while the model process may itself be blocked
sending results that only the service reads. Unsent bytes wait in a backlog, written
whenever the service sends or receives (a thread doing the sends waited for the GIL,
up to the 5 ms switch interval, and the model process idled meanwhile). The model
process's side is plain blocking I/O: the service always reads.
"""

from __future__ import annotations

import select
import socket
import struct
from collections import deque

_HEADER = struct.Struct("!Q")
_BUFFER = 4 << 20  # per direction (Linux caps it at net.core.wmem_max / rmem_max)
_CHUNK = 1 << 20


class ChannelClosedError(EOFError):
    """The other side is gone."""


class Channel:
    """The service's end: non-blocking sends with a backlog, receives with a timeout."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        widen(sock)
        self._sock = sock
        self._out: deque[memoryview] = deque()
        self._in = bytearray()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, msg: bytes) -> None:
        self._out.append(memoryview(_HEADER.pack(len(msg)) + msg))
        self._flush()

    def _flush(self) -> None:
        out = self._out
        while out:
            head = out[0]
            try:
                sent = self._sock.send(head)
            except BlockingIOError:
                return
            except OSError as exc:
                raise ChannelClosedError(str(exc)) from exc
            if sent < len(head):
                out[0] = head[sent:]
                return
            out.popleft()

    def _frame(self) -> bytes | None:
        buf = self._in
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        end = _HEADER.size + size
        if len(buf) < end:
            return None
        msg = bytes(buf[_HEADER.size : end])
        del buf[:end]
        return msg

    def _read(self) -> bool:
        """Whatever bytes are there; False if none."""
        try:
            data = self._sock.recv(_CHUNK)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise ChannelClosedError(str(exc)) from exc
        if not data:
            raise ChannelClosedError("the other side closed the channel")
        self._in += data
        return True

    def receive(self, timeout: float) -> bytes | None:
        """The next message, waiting up to `timeout` seconds (0: only what is there)
        while the backlog is written; None if none came."""
        msg = self._frame()
        if msg is not None:
            return msg
        # Read before writing: a side that failed sends its error, then closes, and a write
        # would report only the broken pipe.
        while self._read():
            msg = self._frame()
            if msg is not None:
                return msg
        self._flush()
        if timeout <= 0:
            return None
        writers = [self._sock] if self._out else []
        readable, writable, _ = select.select([self._sock], writers, [], timeout)
        if writable:
            self._flush()
        if readable:
            while self._read():
                msg = self._frame()
                if msg is not None:
                    return msg
        return self._frame()

    def close(self) -> None:
        self._sock.close()


def widen(sock: socket.socket) -> None:
    """Room for a few batches each way, so a large one needs fewer turns to get across."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)


def send_frame(sock: socket.socket, msg: bytes) -> None:
    """The model process's send (blocking)."""
    sock.sendall(_HEADER.pack(len(msg)) + msg)


def recv_frame(sock: socket.socket) -> bytes:
    """The model process's receive (blocking); ChannelClosedError when the service is gone."""
    header = _recv_exactly(sock, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], min(size - got, _CHUNK))
        if n == 0:
            raise ChannelClosedError("the service closed the channel")
        got += n
    return bytes(buf)
