"""The I/O backends (issue 11): --io auto|uring|epoll, and what happens where
io_uring is denied.

``seccomp_run`` (tests/integration/seccomp_run.c, built by CMake next to the
server) installs a seccomp filter that fails io_uring_setup, io_uring_enter and
io_uring_register with EPERM - what Docker's default profile and Kubernetes'
RuntimeDefault do - and execs the server. Under it, the default (auto) must
serve real PyTorch clients on epoll and say why in one log line; --io uring
must refuse to start, naming io_uring. ringstore only.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import reap, ringstore_bin, spawn
from test_control_plane import call, cp_factory, get_json  # noqa: F401  (fixture)

pytestmark = pytest.mark.ringstore_only

DENIED = ("io_uring denied (Operation not permitted: a seccomp profile or "
          "kernel.io_uring_disabled?); using epoll")


def seccomp_run() -> Path:
    p = ringstore_bin().parent / "seccomp_run"
    if not p.is_file():
        pytest.fail(f"{p} not built (CMake builds it with RS_BUILD_TESTS=ON)", pytrace=False)
    return p


def uring_allowed_here() -> bool:
    try:
        return Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() == "0"
    except OSError:
        return True


def exercise(srv) -> None:
    """Real PyTorch clients: writes seen across connections, a released wait."""
    a, b = srv.client(), srv.client()
    a.set("k", "v")
    assert b.get("k") == b"v"
    assert a.add("n", 2) == 2 and b.add("n", 3) == 5
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(b.get("late")))
    t.start()
    time.sleep(0.05)
    a.set("late", "x")
    t.join(10)
    assert got == [b"x"]
    assert a.multi_get(["k", "late"]) == [b"v", b"x"]


def test_auto_under_seccomp_serves_torch_on_epoll(server_factory):
    srv = server_factory("--io", "auto", wrap=[str(seccomp_run())])
    exercise(srv)
    log = srv.log()
    assert log.count("using epoll") == 1, log
    assert DENIED in log, log
    assert re.search(r"reactor threads? on epoll", log), log


def test_io_uring_under_seccomp_exits_naming_io_uring():
    r = subprocess.run([str(seccomp_run()), str(ringstore_bin()), "--io", "uring",
                        "--port", "0", "--bind", "127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "listening" not in r.stdout
    assert "--io uring: io_uring denied (Operation not permitted" in r.stderr, r.stderr


def test_default_startup_under_seccomp(tmp_path):
    """scripts/serve's command line (ringstore --port N, no other flag) under the
    filter: it serves on the default dual-stack address, on epoll."""
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = spawn([str(seccomp_run()), str(ringstore_bin()), "--port", "0"],
                  stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        port = None
        while port is None:
            m = re.match(r"ringstore listening on \S+:(\d+)\n", out.read_text())
            if m:
                port = int(m.group(1))
            elif p.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no listening line; rc={p.poll()}\n{err.read_text()}", pytrace=False)
            else:
                time.sleep(0.01)
        import torch.distributed as dist

        c = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=10))
        c.set("served", "yes")
        assert c.get("served") == b"yes"
        del c
        p.send_signal(signal.SIGTERM)
        assert reap(p, 10) == 0
    finally:
        reap(p, 0)
    log = err.read_text()
    assert DENIED in log and "on epoll" in log, log


@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_backend_is_reported(cp_factory, io):
    if io == "uring" and not uring_allowed_here():
        pytest.skip("io_uring disabled on this host")
    srv = cp_factory("--control-port", "0", "--io", io)
    name = {"uring": "io_uring", "epoll": "epoll"}[io]
    exercise(srv)
    status, _, body = call(srv, "GET", "/metrics")
    assert status == 200
    assert f'\nringstore_info{{backend="{name}"}} 1\n'.encode() in body, body[:400]
    stats = get_json(srv, "/handler/stats")
    assert stats["backend"] == name
    assert stats["ringstore_connections_accepted_total"] >= 2
    assert re.search(rf"reactor threads? on {name} \(CPUs: ", srv.log()), srv.log()
    assert "using epoll" not in srv.log()


def test_help_and_bad_values():
    h = subprocess.run([str(ringstore_bin()), "--help"], capture_output=True, text=True, timeout=10)
    assert h.returncode == 0 and "--io MODE" in h.stdout
    r = subprocess.run([str(ringstore_bin()), "--io", "kqueue"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "--io wants 'auto', 'uring' or 'epoll'" in r.stderr


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_wide_fanout_across_reactors(cp_factory, io):
    """9000 waiters on one key over 2 reactors, released by one SET: about half the
    wake-ups cross to the other reactor in one burst - several times what epoll's
    1024-cell message queue holds, so its sender keeps the rest and retries. Each
    waiter is released exactly once and the byte stream stays in sync."""
    import socket

    from conftest import VALIDATE, req, s, u32, u64

    if io == "uring" and not uring_allowed_here():
        pytest.skip("io_uring disabled on this host")
    n = 9000
    srv = cp_factory("--control-port", "0", "--io", io, threads=2)
    socks = []
    try:
        for _ in range(n):
            c = socket.create_connection((srv.host, srv.port), timeout=30)
            c.sendall(VALIDATE + req("WAIT", u64(1), s(b"/go")) + req("PING", u32(7)))
            socks.append(c)
        for c in socks:  # the PING after the WAIT: every wait is registered
            assert c.recv(4, socket.MSG_WAITALL) == u32(7)
        srv.client().set("go", "now")  # torch sends the key as "/go"
        for c in socks:
            assert c.recv(1, socket.MSG_WAITALL) == b"\x00"
            c.sendall(req("PING", u32(9)))
        for c in socks:
            assert c.recv(4, socket.MSG_WAITALL) == u32(9)
    finally:
        for c in socks:
            c.close()
    m = get_json(srv, "/handler/stats")["ringstore_wakeups_total"]
    assert m["local"] + m["remote_sent"] == n, m
    assert m["remote_received"] == m["remote_sent"] > 0, m
