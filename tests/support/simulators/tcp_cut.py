"""Not protocol simulators: TCP relays in front of a real server that misbehave part-way.

CuttingRelay forwards bytes both ways unchanged until the server has sent
`cut_after` bytes in total, then closes every connection and stops listening,
the way a database host that crashes or loses its network looks to a client in
the middle of a transfer. Used to test what `fg-image` says when MongoDB goes away.

StallingRelay forwards everything, but holds a request that starts with
`method` (e.g. b"PUT /v2/images/") for `stall` seconds once `after` bytes of it have passed: a slow
upload over a slow link (used to outlive a Keystone token during a Glance upload).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class CuttingRelay:
    def __init__(self, upstream_host: str, upstream_port: int, cut_after: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_after = cut_after
        self.sent = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True, name="tcp-cut-accept").start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        """Forward src → dst until either side ends, then end both (counted: the server's direction)."""
        try:
            self._forward(src, dst, counted)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _forward(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        while data := src.recv(65536):
            if counted:
                with self._lock:
                    self.sent += len(data)
                    over = self.sent > self.cut_after
                if over:
                    self.stop()
                    return
            dst.sendall(data)

    def stop(self) -> None:
        """Refuse new connections and drop every open one."""
        self.cut.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
        self.listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class StallingRelay(CuttingRelay):
    def __init__(self, upstream_host: str, upstream_port: int, method: bytes, after: int, stall: float) -> None:
        self.method, self.after, self.stall = method, after, stall
        self.stalled = 0
        """How many requests were held."""
        super().__init__(upstream_host, upstream_port, cut_after=1 << 62)

    def _forward(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        if counted:  # the server's answers pass unchanged
            return super()._forward(src, dst, counted)
        tail, since = b"", -1  # since: bytes passed since the request line began (-1: not seen yet)
        while data := src.recv(65536):
            dst.sendall(data)
            if since < 0:
                window = tail + data
                at = window.find(self.method)
                if at >= 0:
                    since = len(window) - at
                tail = window[-len(self.method):]
            else:
                since += len(data)
            if since >= self.after:
                since, tail = -1, b""
                self.stalled += 1
                time.sleep(self.stall)
