"""A TCP proxy in front of the moto server (or any local server) that can go down mid-transfer: the
endpoint "stops" without the server losing its state, so tests can check what an outage left behind."""

from __future__ import annotations

import socket
import threading


class Proxy:
    """A TCP proxy to moto that can go down mid-transfer (connections reset, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.up = True
        self.cut_after: int | None = None
        self.down_after_connections: int | None = None  # go down once this many connections were accepted
        self.accepted = 0
        self.forwarded = 0
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.up and self.down_after_connections is not None and self.accepted >= self.down_after_connections:
                self.up = False
            if not self.up:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted:
                    with self.lock:
                        self.forwarded += len(data)
                        if self.cut_after is not None and self.forwarded > self.cut_after:
                            self.down()
                            return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        self.up = False
        self.cut_after = None
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []

    def close(self) -> None:
        self.down()
        self.sock.close()
