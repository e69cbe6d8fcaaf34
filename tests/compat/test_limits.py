"""Resource limits (issue 7): each one closes the offending connection with a
log line and a counter, never the server; other clients and stored data are
unharmed. Healthy clients are real torch clients; offenders are raw sockets."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import VALIDATE, i64, req, s, u32

pytestmark = [pytest.mark.ringstore_only]


def set_raw(key: bytes, value: bytes) -> bytes:
    return req("SET", s(key), s(value))


def test_max_memory_refuses_writes_but_keeps_reads(server_factory):
    srv = server_factory("--max-memory", "64K")
    good = srv.client()
    good.set("keep", b"k" * 1024)
    # Stored before the flood starts (SET has no reply; a GET on the same
    # connection is answered after it): else, with several reactors, the
    # flood can fill memory first and this SET be the one refused.
    assert good.get("keep") == b"k" * 1024
    bad = srv.raw()
    for i in range(16):  # 16 x 16 KiB cannot fit in 64 KiB
        try:
            bad.send(set_raw(f"/big{i}".encode(), b"v" * 16384))
        except (BrokenPipeError, ConnectionResetError):
            break
    bad.expect_eof()
    srv.wait_log(r"closing .*memory limit.*\(memory_limit\)")
    # Reads, deletes and small writes after freeing space keep working.
    assert good.get("keep") == b"k" * 1024
    stored = [k for k in good.list_keys() if k.startswith("big")]
    assert 1 <= len(stored) < 16
    for k in stored:
        assert good.get(k) == b"v" * 16384
        assert good.delete_key(k)
    good.set("after", "ok")
    assert good.get("after") == b"ok"
    st = srv.stats()
    assert st["memory_limit"] == 1


def test_slow_reader_is_closed_and_others_carry_on(server_factory):
    srv = server_factory("--max-output-bytes", "1M")
    good = srv.client()
    good.set("v", b"x" * 32768)
    # SET has no reply: with several reactors the slow connection's GETs
    # can run before it and find no value (2000 empty replies, far under
    # the limit). A GET on the same connection is answered after the SET.
    assert good.get("v") == b"x" * 32768
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", srv.port))
    slow.settimeout(10)
    get = req("GET", s(b"/v"))
    slow.sendall(VALIDATE + get * 2000)  # 64 MiB of replies it never reads
    srv.wait_log(r"closing .*too many reply bytes.*\(slow_reader\)", timeout=20)
    assert good.get("v") == b"x" * 32768
    good.set("w", "1")
    assert good.add("n", 5) == 5
    # Draining the socket ends in EOF or a reset: the server closed it.
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and slow.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    slow.close()
    assert srv.stats()["slow_reader"] == 1


def test_handshake_timeout_closes_silent_connections(server_factory):
    srv = server_factory("--handshake-timeout", "1")
    silent = socket.create_connection(("127.0.0.1", srv.port))
    half = socket.create_connection(("127.0.0.1", srv.port))
    half.sendall(VALIDATE[:3])  # a partial VALIDATE does not count
    ok = srv.raw()  # validated at once
    t0 = time.monotonic()
    for sock in (silent, half):
        sock.settimeout(10)
        assert sock.recv(10) == b""
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 5, waited
    time.sleep(1.2)
    ok.send(req("PING", u32(7)))
    assert ok.recv_exact(4) == u32(7)
    srv.wait_log(r"\(handshake_timeout\)")
    assert srv.stats()["handshake_timeout"] == 2


def test_max_connections(server_factory):
    srv = server_factory("--max-connections", "3")
    good = srv.client()
    occupants = [srv.raw(), srv.raw()]  # 3 of 3 taken
    extra = socket.create_connection(("127.0.0.1", srv.port))
    extra.settimeout(5)
    try:
        assert extra.recv(10) == b""
    except ConnectionResetError:
        pass
    srv.wait_log(r"refusing .*connection limit reached \(conn_limit\)")
    good.set("a", "1")
    assert good.get("a") == b"1"
    # Closing one frees a place.
    occupants.pop().close()
    deadline = time.monotonic() + 5
    while True:
        try:
            c = srv.raw()
            break
        except (EOFError, ConnectionResetError, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    c.send(req("GET", s(b"/a")))
    assert c.recv_bytes() == b"1"
    st = srv.stats()
    assert st["conn_limit"] >= 1 and st["rejected"] >= 1


def test_allow_list(server_factory):
    srv = server_factory("--allow", "10.0.0.0/8", "--allow", "fd00::/8")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.settimeout(5)
    sock.sendall(VALIDATE + req("PING", u32(1)))
    try:
        assert sock.recv(10) == b""
    except ConnectionResetError:
        pass
    srv.wait_log(r"refusing 127\.0\.0\.1:\d+: address not in the allow list \(not_allowed\)")
    assert srv.stats()["not_allowed"] == 1

    srv2 = server_factory("--allow", "127.0.0.0/8")
    c = srv2.client()
    c.set("allowed", "yes")
    assert c.get("allowed") == b"yes"


@pytest.mark.parametrize("flag,value", [("--allow", "300.1.1.1/8"), ("--allow", "10.0.0.0/33"),
                                        ("--max-memory", "12Q")])
def test_bad_limit_flags(flag, value):
    import subprocess

    from conftest import ringstore_bin

    r = subprocess.run([str(ringstore_bin()), flag, value], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    assert flag in r.stderr


def test_add_memory_limit_counts_queues(server_factory):
    srv = server_factory("--max-memory", "32K")
    good = srv.client()
    bad = srv.raw()
    for i in range(8):
        try:
            bad.send(req("QUEUE_PUSH", s(b"/q"), s(b"z" * 8192)))
        except (BrokenPipeError, ConnectionResetError):
            break
    bad.expect_eof()
    n = good.queue_len("q")
    assert 1 <= n < 8
    assert good.queue_pop("q") == b"z" * 8192
    assert good.queue_len("q") == n - 1
    assert srv.stats()["memory_limit"] == 1


TCP_REPAIR = 19  # linux/tcp.h


def vanish(conn) -> None:
    """Drop a client socket without a FIN or RST (TCP_REPAIR close)."""
    try:
        conn.sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except PermissionError:
        pytest.skip("TCP_REPAIR needs CAP_NET_ADMIN")
    conn.sock.close()


def test_keepalive_finds_vanished_peers(server_factory):
    srv = server_factory("--keepalive", "1")
    good = srv.client()
    gone = srv.raw()
    gone.send(req("WAIT", i64(1), s(b"/never")))  # a registered wait
    vanish(gone)
    # Idle 1 s, then a probe: the peer's kernel no longer knows the
    # connection and answers RST, so the server closes it.
    srv.wait_log(r"closing 127\.0\.0\.1:\d+: socket error", timeout=15)
    good.set("still", "here")
    assert good.get("still") == b"here"
    st = srv.stats()
    assert st["io"] == 1 and st["active"] == 0


def test_keepalive_off_keeps_silent_peers(server_factory):
    srv = server_factory("--keepalive", "0")
    gone = srv.raw()
    vanish(gone)
    time.sleep(3)
    assert "socket error" not in srv.log()
    assert srv.stats()["io"] == 0
