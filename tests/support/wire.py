"""A TCP relay on 127.0.0.1 that counts the bytes each way: what a transfer really put on the wire."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Counted:
    url: str
    sent: int = 0  # client → server
    received: int = 0  # server → client
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.sent = self.received = 0


@contextmanager
def counting_relay(target_url: str) -> Iterator[Counted]:
    """Relay http://127.0.0.1:PORT to target_url's host and port, counting bytes."""
    host, port = target_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    counted = Counted(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                with counted.lock:
                    if upstream:
                        counted.sent += len(data)
                    else:
                        counted.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((host, int(port)))
            threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield counted
    finally:
        stop.set()
        listener.close()
