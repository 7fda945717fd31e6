"""A small TCP proxy on loopback, for tests that cut a process's connections to a server (the database, the fake
exchange) in the middle of its work, without touching the server itself (other people use the shared MariaDB)."""

from __future__ import annotations

import contextlib
import socket
import threading

# Ports the test processes of this machine may listen on.
PORT_RANGE = range(18400, 18500)


class TcpProxy:
    """Forwards every connection on ``127.0.0.1:port`` to ``target``. ``cut()`` drops the connections it carries and
    refuses new ones (each is closed at once) until ``resume()``."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = _listen_in_range()
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping = True
        self._listener.close()
        self.cut()
        self._thread.join(timeout=5)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def resume(self) -> None:
        with self._lock:
            self._cut = False

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _listen_in_range() -> socket.socket:
    for port in PORT_RANGE:
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            continue
        listener.listen(64)
        return listener
    raise OSError(f"no free port in {PORT_RANGE.start}..{PORT_RANGE.stop - 1}")
