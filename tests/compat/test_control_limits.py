"""Control-plane resource limits: at most 64 HTTP clients at once, and idle
ones are closed (--control-idle-timeout), so local HTTP clients can never
take the descriptors the store needs. The store keeps serving a real torch
client throughout."""

from __future__ import annotations

import datetime
import socket
import time

import pytest

from test_control_plane import cp_factory  # noqa: F401  (fixture)

pytestmark = pytest.mark.ringstore_only


def http_conn(srv) -> socket.socket:
    s = socket.create_connection(srv.control, timeout=10)
    return s


def ping(sock) -> bytes:
    sock.sendall(b"GET /handler/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"pong" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed early: {data!r}"
        data += chunk
    return data


def is_closed(sock, timeout) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_idle_control_clients_are_closed(cp_factory):
    srv = cp_factory("--control-port", "0", "--control-idle-timeout", "1")
    idle, busy = http_conn(srv), http_conn(srv)
    assert b"200 OK" in ping(idle)
    t0 = time.monotonic()
    closed = False
    while time.monotonic() - t0 < 4:
        assert b"pong" in ping(busy)  # active: kept open
        if is_closed(idle, 0.2):
            closed = True
            break
    assert closed, "an idle control client was not closed within 4 s"
    assert b"pong" in ping(busy)


def test_at_most_64_control_clients(cp_factory):
    import torch.distributed as dist

    srv = cp_factory("--control-port", "0")
    store = dist.TCPStore("127.0.0.1", srv.port, is_master=False,
                          timeout=datetime.timedelta(seconds=10))
    held = [http_conn(srv) for _ in range(64)]
    assert b"pong" in ping(held[0])
    extra = http_conn(srv)
    assert is_closed(extra, 5), "the 65th control client was not refused"
    srv.wait_log(r"refusing a control-plane connection: 64 are open")
    store.set("k", "v")  # the store is unaffected
    assert store.get("k") == b"v"
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # a place frees up once the server saw the close
        s = http_conn(srv)
        try:
            if b"pong" in ping(s):
                break
        except (AssertionError, ConnectionResetError):
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
