"""The HTTP plumbing the fake servers share: a threading server on loopback that knows its open connections, so a
fake can drop them all at once (a dropped connection is one of the faults the clients must survive)."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TrackingHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding ``fake`` (the simulation its handler answers from) and the sockets of the
    requests in progress."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: Any):
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut every open connection down: the clients see a reset or an empty answer."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def reply_write(handler: BaseHTTPRequestHandler, reply: Any) -> None:
    """Answer ``handler``'s request with a fake's ``reply`` (``status``, ``content_type``, ``body``, ``disconnect``):
    drop the connection without an answer when the reply says so, else send it; a client that went away meanwhile
    only ends the connection."""
    if reply.disconnect:
        handler.close_connection = True
        with suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)
        return
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True
