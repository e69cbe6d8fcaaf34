"""One store per port, whatever the reactor count and accept mode.

With several reactors each has an SO_REUSEPORT listener, and the kernel lets any
process of the same user join such a group: a second ringstore (or anything else
with SO_REUSEPORT) on the same port would silently take a share of the
connections - two stores, two `init/` counters, a rendezvous that never
completes. ringstore must refuse to start on a port another process listens on,
as PyTorch's server does ("address already in use"), and a process that joins
its group anyway must never receive one of its connections.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket

import pytest

from conftest import TARGET, reap, start_ringstore_args

pytestmark = pytest.mark.skipif(TARGET != "ringstore", reason="ringstore binary only")

T = datetime.timedelta(seconds=30)

# (threads, accept mode)
CONFIGS = [(1, "reuseport"), (2, "reuseport"), (4, "reuseport"), (2, "single"), (4, "single")]


def cfg_id(c):
    return f"{c[0]}r-{c[1]}"


def start(tmp_path, name, port, threads, accept):
    return start_ringstore_args(["--port", str(port), "--bind", "127.0.0.1", "--threads",
                                 str(threads), "--accept", accept], tmp_path, name)


def stop(p):
    p.send_signal(signal.SIGTERM)
    assert reap(p, 20) == 0


def count_on_one_store(port, n):
    """n torch clients each add 1 to one counter: with one store the last sees n."""
    import torch.distributed as dist

    clients = [dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                             timeout=T) for _ in range(n)]
    last = [c.add("one-store-ctr", 1) for c in clients][-1]
    seen = {c.get("one-store-ctr") for c in clients}
    return last, seen


def second_must_fail(tmp_path, port, threads, accept, holder_pid):
    p, shown, err = start(tmp_path, f"second-{threads}-{accept}", port, threads, accept)
    if shown is not None:
        stop(p)
        raise AssertionError(f"a second ringstore ({threads} reactors, {accept}) started on "
                             f"busy port {port}")
    assert reap(p, 20) == 1
    log = err.read_text()
    assert f"cannot listen on 127.0.0.1 port {port}: Address already in use" in log, log
    assert f"held by pid {holder_pid} " in log, log


@pytest.mark.parametrize("first", CONFIGS, ids=cfg_id)
@pytest.mark.parametrize("second", CONFIGS, ids=cfg_id)
def test_second_ringstore_on_a_busy_port_exits(tmp_path, first, second):
    a, port, _ = start(tmp_path, "first", 0, *first)
    assert port
    try:
        second_must_fail(tmp_path, port, *second, holder_pid=a.pid)
        # the first server is unharmed: every client lands on it
        last, seen = count_on_one_store(port, 24)
        assert last == 24 and seen == {b"24"}
    finally:
        stop(a)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_port_held_by_a_reuseport_process_is_busy(tmp_path, threads):
    """Another program listening with SO_REUSEPORT (same user) holds the port."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen(16)
    try:
        second_must_fail(tmp_path, other.getsockname()[1], threads, "reuseport",
                         holder_pid=os.getpid())
    finally:
        other.close()


@pytest.mark.parametrize("threads", [2, 4])
def test_a_process_joining_our_reuseport_group_gets_no_connection(tmp_path, threads):
    """The kernel lets a same-user SO_REUSEPORT socket join our group; the steering
    program must keep every new connection on ringstore's own listeners."""
    a, port, err = start(tmp_path, "first", 0, threads, "reuseport")
    joiner = socket.socket()
    try:
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joiner.bind(("127.0.0.1", port))  # allowed by the kernel: same user, reuseport
        joiner.listen(1024)
        joiner.setblocking(False)
        # the kernel completes the handshake before connect() returns, so each
        # connection is already queued on the listener it was steered to
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        stolen = 0
        while True:
            try:
                s, _ = joiner.accept()
                s.close()
                stolen += 1
            except BlockingIOError:
                break
        assert stolen == 0, f"{stolen} of 300 connections went to the joining socket"
        last, seen = count_on_one_store(port, 8)
        assert last == 8 and seen == {b"8"}
        for c in conns:
            c.close()
    finally:
        joiner.close()
        stop(a)
    m = re.search(r"stats: accepted=(\d+) ", err.read_text())
    assert m and int(m.group(1)) == 308, err.read_text()[-2000:]
