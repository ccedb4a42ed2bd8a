"""A listening socket that accepts connections and never says a word (a hung peer on demand)."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def silent(server: socket.socket) -> Iterator[socket.socket]:
    """Accept on the bound ``server`` and hold every connection open, unanswered, until the
    block ends; then close them and the server."""
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
