"""A small fault-injecting HTTP proxy on 127.0.0.1 in front of a real peer.

The provider under test talks to the proxy as if it were the OAuth server. Each incoming request
takes the next armed ``Mode`` (or ``PASS``): the proxy reads the whole request, then either
forwards it and relays the answer, or misbehaves in one of the ways a network or a load balancer
does. "Before" modes never reach the peer (nothing happened there); "after" modes forward the
request first, so the peer performs the grant (and rotates) and only the answer goes wrong.

One request per client connection (``Connection: close`` both ways) keeps the relay trivial.
``blackhole()`` is a separate listener whose accept queue is full, so connecting to it times out:
the only honest connect timeout on loopback.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
MAX_HEADER_BYTES = 64 * 1024
IO_TIMEOUT = 10.0


class Mode(enum.StrEnum):
    PASS = "pass"  # relay faithfully
    DELAY = "delay"  # wait ``seconds``, then relay (slow but fine)
    RESET_BEFORE = "reset_before"  # TCP RST after reading the request; the peer never sees it
    RESET_AFTER = "reset_after"  # forward, let the peer answer, then RST instead of relaying
    HANG_AFTER = "hang_after"  # forward, let the peer answer, then say nothing for ``seconds``
    HTML_502 = "html_502"  # a load balancer's 502 page; the peer never sees the request
    HTML_503 = "html_503"  # a load balancer's 503 page with Retry-After; the peer never sees it


@dataclass(frozen=True, slots=True)
class Armed:
    mode: Mode
    seconds: float = 0.0


_HTML = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _html_answer(status: int, reason: str, extra_headers: str = "") -> bytes:
    body = _HTML.format(status=status, reason=reason).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nServer: nginx\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.counts: Counter[str] = Counter()  # requests per mode
        self.forwarded = 0  # requests the peer received
        self._armed: deque[Armed] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._blackholes: list[socket.socket] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        for sock in self._blackholes:
            sock.close()
        for worker in self._workers:
            worker.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # --- knobs ---------------------------------------------------------------------------------

    def arm(self, mode: Mode, *, times: int = 1, seconds: float = 0.0) -> None:
        with self._lock:
            self._armed.extend(Armed(mode, seconds) for _ in range(times))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def blackhole(self) -> str:
        """A URL on 127.0.0.1 whose connects time out (a listener with a full accept queue)."""
        hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hole.bind((LOOPBACK, 0))
        hole.listen(0)
        self._blackholes.append(hole)
        port = hole.getsockname()[1]
        # Fill the queue: with backlog 0 Linux queues one connection; later SYNs are dropped.
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                filler.connect((LOOPBACK, port))
            self._blackholes.append(filler)
        time.sleep(0.05)
        return f"http://{LOOPBACK}:{port}"

    def _next(self) -> Armed:
        with self._lock:
            return self._armed.popleft() if self._armed else Armed(Mode.PASS)

    # --- serving -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
            worker.start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(IO_TIMEOUT)
        try:
            request = _read_request(client)
            if request is None:
                client.close()
                return
            armed = self._next()
            with self._lock:
                self.counts[armed.mode] += 1
            self._apply(armed, client, request)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()

    def _apply(self, armed: Armed, client: socket.socket, request: bytes) -> None:
        match armed.mode:
            case Mode.RESET_BEFORE:
                _reset(client)
            case Mode.HTML_502:
                client.sendall(_html_answer(502, "Bad Gateway"))
                client.close()
            case Mode.HTML_503:
                client.sendall(_html_answer(503, "Service Temporarily Unavailable", "Retry-After: 120\r\n"))
                client.close()
            case Mode.DELAY:
                self._stopping.wait(armed.seconds)
                client.sendall(self._forward(request))
                client.close()
            case Mode.RESET_AFTER:
                self._forward(request)
                _reset(client)
            case Mode.HANG_AFTER:
                answer = self._forward(request)
                self._stopping.wait(armed.seconds)
                with contextlib.suppress(OSError):  # the client gave up long ago
                    client.sendall(answer)
                client.close()
            case Mode.PASS:
                client.sendall(self._forward(request))
                client.close()

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.upstream, timeout=IO_TIMEOUT) as upstream:
            upstream.sendall(request)
            with self._lock:
                self.forwarded += 1
            chunks = []
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a clean FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_request(client: socket.socket) -> bytes | None:
    """One whole HTTP/1.1 request (headers + Content-Length body), rewritten to Connection: close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEADER_BYTES:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        if lowered in (b"connection", b"keep-alive"):
            continue
        kept.append(line)
    kept.append(b"Connection: close")
    while len(body) < length:
        chunk = client.recv(65536)
        if not chunk:
            return None
        body += chunk
    return b"\r\n".join(kept) + b"\r\n\r\n" + body
