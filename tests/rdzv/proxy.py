# SPDX-License-Identifier: MIT
"""A TCP proxy in front of a store server, to restart the store under its
clients' feet.

``StoreProxy(upstream_host, upstream_port)`` starts ``python3 proxy.py HOST
PORT`` (its own process: torch's client holds the GIL through some requests,
such as LIST_KEYS, so a relay in the test's process could deadlock with
it), which listens on 127.0.0.1 (a port of its own, kept for its whole life)
and relays every connection to the upstream server, one thread for everything
(selectors). The test drives it through its stdin. To the clients:

* ``down()`` is a store crash: every relayed connection is closed and new
  ones are refused (the listening socket is closed) until ``up()``;
* ``up(port=None)`` is the store back, optionally at a new upstream port
  (a restarted ringstore that came up with ``--port 0``): clients that
  reconnect to the proxy's unchanged port reach it;
* ``cut()`` closes every relayed connection and keeps accepting (a restart
  that took no time);
* ``drop_reply_to(pattern)``: the first request (client bytes) containing
  ``pattern`` is relayed, its reply is discarded and that connection is
  closed: the server applied the request, its client never learns the
  outcome (a lost reply).

``accepted`` counts the connections accepted so far, so a test can wait for
clients to have reconnected (observable state, not time). A test that
SIGKILLs and restarts the real server behind the proxy needs only ``down()``
before the kill and ``up(new_port)`` after the restart.
"""
from __future__ import annotations

import selectors
import socket
import struct
import sys
import threading


class StoreProxy:
    """The test's handle on a relay process (``_Relay``)."""

    def __init__(self, upstream_host: str, upstream_port: int, spawn=None):
        import subprocess

        spawn = spawn or subprocess.Popen
        self.host = "127.0.0.1"
        self._proc = spawn([sys.executable, __file__, upstream_host, str(upstream_port)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().split()
        if line[:3] != ["proxy", "listening", "on"]:
            raise RuntimeError(f"store proxy did not start: {line}")
        self.port = int(line[3].rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _cmd(self, *words) -> str:
        self._proc.stdin.write(" ".join(words) + "\n")
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline().rstrip("\n").split(" ", 1)
        if reply[0] != "ok":
            raise RuntimeError(f"store proxy: {words} -> {reply}")
        return reply[1].strip() if len(reply) > 1 else ""

    def down(self) -> None:
        self._cmd("down")

    def up(self, port: int | None = None) -> None:
        self._cmd("up", *([str(port)] if port is not None else []))

    def cut(self) -> None:
        self._cmd("cut")

    def drop_reply_to(self, pattern: bytes) -> None:
        self._cmd("drop", pattern.hex())

    @property
    def accepted(self) -> int:
        return int(self._cmd("accepted"))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._cmd("quit")
            except (OSError, RuntimeError):
                pass
            try:
                self._proc.wait(10)
            except Exception:  # noqa: BLE001
                self._proc.kill()


class _Relay:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._listener: socket.socket | None = None
        self.port = 0
        self.accepted = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._ops: list = []
        self._stop = False
        self._drop_pattern: bytes | None = None  # armed by drop_reply_to()
        self._doomed: set[socket.socket] = set()  # upstreams whose next reply is dropped
        self._upstreams: set[socket.socket] = set()
        self._listen()
        self._thread = threading.Thread(target=self._loop, name="store-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------ control
    def _call(self, fn) -> None:
        """Run fn in the proxy's thread and wait for it."""
        done = threading.Event()
        with self._lock:
            self._ops.append((fn, done))
        self._wake_w.send(b"x")
        if not done.wait(30):
            raise RuntimeError("store proxy thread is stuck")

    def down(self) -> None:
        self._call(self._down)

    def up(self, port: int | None = None) -> None:
        self._call(lambda: self._up(port))

    def cut(self) -> None:
        self._call(self._drop_all)

    def drop_reply_to(self, pattern: bytes) -> None:
        def arm():
            self._drop_pattern = pattern
        self._call(arm)

    def close(self) -> None:
        self._call(self._shutdown)
        self._thread.join(10)

    @property
    def connections(self) -> int:
        return len(self._pairs) // 2

    # ------------------------------------------------------ proxy thread
    def _listen(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(512)
        ls.setblocking(False)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._sel.register(ls, selectors.EVENT_READ, "accept")

    def _down(self) -> None:
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._drop_all()

    def _up(self, port) -> None:
        if port is not None:
            self.upstream = (self.upstream[0], port)
        if self._listener is None:
            self._listen()

    def _shutdown(self) -> None:
        self._down()
        self._stop = True

    def _drop_all(self) -> None:
        for s in list(self._pairs):
            self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        peer = self._pairs.pop(s, None)
        for x in (s, peer):
            if x is None:
                continue
            try:
                self._sel.unregister(x)
            except (KeyError, ValueError):
                pass
            try:
                # RST, as a crashed server's kernel sends, not a polite FIN
                x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            x.close()
        self._upstreams.discard(s)
        self._doomed.discard(s)
        if peer is not None:
            self._pairs.pop(peer, None)
            self._upstreams.discard(peer)

    def _accept(self) -> None:
        try:
            c, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            u = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            c.close()  # upstream gone: like a refused connection
            return
        self.accepted += 1
        for s in (c, u):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs[c], self._pairs[u] = u, c
        self._upstreams.add(u)
        self._sel.register(c, selectors.EVENT_READ, "data")
        self._sel.register(u, selectors.EVENT_READ, "data")

    def _relay(self, s: socket.socket) -> None:
        peer = self._pairs.get(s)
        if peer is None:
            return
        try:
            data = s.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s)
            return
        if s in self._doomed:
            self._doomed.discard(s)
            self._drop(s)
            return
        if (self._drop_pattern is not None and s not in self._upstreams
                and self._drop_pattern in data):
            self._drop_pattern = None
            self._doomed.add(peer)
        try:
            peer.setblocking(True)  # simple back-pressure: stores send little
            peer.settimeout(10)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(s)

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data == "wake":
                    self._wake_r.recv(4096)
                    with self._lock:
                        ops, self._ops = self._ops, []
                    for fn, done in ops:
                        try:
                            fn()
                        finally:
                            done.set()
                elif key.data == "accept":
                    if self._listener is not None:
                        self._accept()
                elif key.fileobj in self._pairs:
                    self._relay(key.fileobj)
        self._sel.close()


def main(argv) -> int:
    relay = _Relay(argv[1], int(argv[2]))
    print(f"proxy listening on {relay.endpoint}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        out = ""
        if cmd == "down":
            relay.down()
        elif cmd == "up":
            relay.up(int(args[0]) if args else None)
        elif cmd == "cut":
            relay.cut()
        elif cmd == "drop":
            relay.drop_reply_to(bytes.fromhex(args[0]))
        elif cmd == "accepted":
            out = str(relay.accepted)
        elif cmd == "quit":
            print("ok", flush=True)
            break
        else:
            print(f"error unknown command {cmd}", flush=True)
            continue
        print(f"ok {out}".rstrip(), flush=True)
    relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
