"""ringstore's own command-line contract: listening line, dual stack, --listen-fd, --threads,
clean shutdown (ringstore only)."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest

pytestmark = pytest.mark.ringstore_only


def test_default_bind_is_dual_stack(server_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = server_factory(bind=None)
    assert srv.listen_addr in ("[::]", "0.0.0.0"), srv.listen_addr
    c4 = srv.client()  # 127.0.0.1
    c4.set("v4", "1")
    if srv.listen_addr == "[::]":
        import torch.distributed as dist

        for host in ("::1", "localhost"):
            c = dist.TCPStore(host, srv.port, is_master=False, timeout=timedelta(seconds=10))
            assert c.get("v4") == b"1"
            c.add("n", 1)
        assert c4.get("n") == b"2"


def test_listen_fd(server_factory):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    port = ls.getsockname()[1]
    srv = server_factory(listen_sock=ls)
    ls.close()  # the server holds its own copy
    assert srv.port == port
    c = srv.client()
    c.set("fd", "ok")
    assert c.get("fd") == b"ok"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_clean_shutdown_with_clients_connected(server_factory, sig):
    import signal

    import torch.distributed as dist

    srv = server_factory()
    clients = [srv.client() for _ in range(4)]
    waiter = srv.client()
    err = []

    def wait():
        try:
            waiter.wait(["never"], timedelta(seconds=20))
        except Exception as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.2)
    clients[0].set("x", "1")
    srv.proc.send_signal(getattr(signal, sig))
    assert srv.proc.wait(timeout=10) == 0
    srv.exit_code = 0
    t.join(10)
    assert not t.is_alive(), "a waiting client was not disconnected at shutdown"
    assert err and isinstance(err[0], (dist.DistError, RuntimeError))
    last = [l for l in srv.log().splitlines() if l.strip()][-1]
    assert "proto_errors" in last


@pytest.mark.parametrize("threads", [2, 4])
def test_cross_thread_wakeups(server_factory, threads):
    srv = server_factory(threads=threads)
    n = 12
    waiters = [srv.client() for _ in range(n)]
    setter = srv.client()
    done = []
    lock = threading.Lock()

    def wait(i):
        waiters[i].wait([f"w{i}", "common"], timedelta(seconds=20))
        with lock:
            done.append(i)

    ts = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    for i in range(n):
        setter.set(f"w{i}", str(i))
    time.sleep(0.2)
    assert not done
    setter.add("common", 1)
    for t in ts:
        t.join(15)
    assert sorted(done) == list(range(n))

    # barrier across reactors
    members = [srv.client() for _ in range(6)]
    bt = [threading.Thread(target=lambda m=m: m.barrier("xb", 6, timedelta(seconds=20)), daemon=True)
          for m in members]
    for t in bt:
        t.start()
    for t in bt:
        t.join(15)
        assert not t.is_alive()

    # one item wakes exactly one popper, across reactors
    poppers = [srv.client() for _ in range(4)]
    got = []
    pt = [threading.Thread(target=lambda p=p: got.append(p.queue_pop("xq")), daemon=True) for p in poppers]
    for t in pt:
        t.start()
    time.sleep(0.3)
    for i in range(4):
        setter.queue_push("xq", str(i))
    for t in pt:
        t.join(15)
    assert sorted(got) == [b"0", b"1", b"2", b"3"]

    # counters from many connections on many threads are exact
    adders = [srv.client() for _ in range(8)]
    at = [threading.Thread(target=lambda a=a: [a.add("ctr", 1) for _ in range(200)], daemon=True)
          for a in adders]
    for t in at:
        t.start()
    for t in at:
        t.join(30)
    assert setter.get("ctr") == b"1600"
    stats = srv.stats()
    assert stats.get("accepted", 0) >= n + 1 + 6 + 4 + 8
