"""The ringstore binary's command line: --help/--version, flag errors, --port 0,
--listen-fd (PyTorch's master_listen_fd idea), systemd socket activation
(LISTEN_FDS), the open-file limit, and clean exits on SIGINT and SIGTERM.
Every store check goes through a real torch client."""

from __future__ import annotations

import datetime
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TARGET, reap, ringstore_bin, spawn, start_ringstore_args

pytestmark = pytest.mark.skipif(TARGET != "ringstore", reason="ringstore binary only")

T = datetime.timedelta(seconds=10)


def run(*args, **kw):
    return subprocess.run([str(ringstore_bin()), *args], capture_output=True, text=True,
                          timeout=10, **kw)


def torch_roundtrip(port: int, host="127.0.0.1"):
    import torch.distributed as dist

    s = dist.TCPStore(host, port, is_master=False, wait_for_workers=False, timeout=T)
    s.set(f"cli-{host}", "works")
    assert s.get(f"cli-{host}") == b"works"
    assert s.add(f"n-{host}", 3) == 3


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0
    for flag in ("--port", "--bind", "--threads", "--listen-fd", "--max-key-bytes",
                 "--max-value-bytes", "--max-keys-per-request", "--log-level",
                 "--mget-cache", "--fixed-files", "--spread-sends"):
        assert flag in r.stdout, flag
    r = run("--version")
    assert r.returncode == 0
    assert re.match(r"^ringstore \d+\.\d+\.\d+$", r.stdout.strip())


@pytest.mark.parametrize("args, needle", [
    (["--port", "70000"], "--port"),
    (["--threads", "0"], "--threads"),
    (["--max-key-bytes", "x"], "--max-key-bytes"),
    (["--log-level", "loud"], "log level"),
    (["--mget-cache", "maybe"], "--mget-cache"),
    (["--fixed-files", "yes"], "--fixed-files"),
    (["--spread-sends", "half"], "--spread-sends"),
    (["--spread-sends", "-1"], "--spread-sends"),
    (["--no-such-flag"], "Usage"),
    (["extra"], "unexpected argument"),
    (["--recv-buffers", "100"], "power of two"),
    (["--recv-buffers", "64", "--recv-buffers-min", "128"],
     "--recv-buffers-min 128 exceeds --recv-buffers 64"),
])
def test_bad_flags_exit_2_with_a_message(args, needle):
    r = run(*args)
    assert r.returncode == 2
    assert needle in r.stderr


def test_busy_port_is_a_clear_error():
    # Held by a live process: fails at once, naming it (no wait).
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        r = run("--port", str(port), "--bind", "127.0.0.1")
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and "in use" in r.stderr
    assert f"(held by pid {os.getpid()}" in r.stderr, r.stderr
    assert "waiting" not in r.stderr, r.stderr


def orphan_listener():
    """A listening socket that no process owns: its only reference is in
    flight in a Unix socket's queue, as a dead server's listener is while
    io_uring closes it in the background. Returns (port, release)."""
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    port = l.getsockname()[1]
    a, b = socket.socketpair(socket.AF_UNIX)
    socket.send_fds(a, [b"x"], [l.fileno()])
    l.close()

    def release():
        _, fds, _, _ = socket.recv_fds(b, 1, 1)
        for fd in fds:
            os.close(fd)
        a.close()
        b.close()
    return port, release


def test_port_held_by_a_socket_no_process_owns_is_waited_for(tmp_path):
    # A server killed with thousands of connections: its listener closes a
    # few hundred ms after it exits. A restart waits for it (PyTorch's server
    # closes its own as it exits, so a restart of it finds the port free).
    port, release = orphan_listener()
    timer = threading.Timer(1.0, release)
    timer.start()
    try:
        p, got, err = start(["--port", str(port), "--bind", "127.0.0.1"], tmp_path)
    finally:
        timer.join()
    assert got == port
    assert "no process here owns" in err.read_text() and "waiting up to" in err.read_text()
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_port_held_by_a_socket_no_process_owns_fails_after_the_wait():
    port, release = orphan_listener()
    try:
        r = run("--port", str(port), "--bind", "127.0.0.1")
    finally:
        release()
    # The whole wait, then the error (the server counts its sleeps, so the
    # test need not time it): the warning first, the holder named after.
    assert r.returncode == 1
    warned = r.stderr.find("waiting up to 3 s for it to close")
    gave_up = r.stderr.find(
        "in use (held by a socket that no process here owns, still after 3 s)")
    assert 0 <= warned < gave_up, r.stderr


def start(args, tmp_path, **kw):
    p, port, err = start_ringstore_args(args, tmp_path, **kw)
    assert port is not None, err.read_text()
    return p, port, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_clean_exit_on_signal_with_clients_connected(tmp_path, sig):
    import torch.distributed as dist

    p, port, err = start(["--port", "0", "--bind", "127.0.0.1"], tmp_path)
    s = dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False, timeout=T)
    s.set("k", "v")
    p.send_signal(sig)
    assert reap(p, 10) == 0
    log = err.read_text()
    assert "shutting down" in log
    assert re.search(r"stats: .*accepted=1 .*shutdown=1", log), log


_STARTED_RE = re.compile(r"ringstore \S+: (\d+) reactor threads? on \S+ \(CPUs: (\d+) in the "
                         r"affinity mask(?:, cgroup CPU quota ([0-9.]+))?\)")


def stopped_server_figures(p, port, err):
    """Check that a started server serves, stop it; return (reactors, CPUs in
    its mask, its cgroup quota or None) from its start-up line."""
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0
    m = _STARTED_RE.search(err.read_text())
    assert m, err.read_text()
    return int(m.group(1)), int(m.group(2)), (float(m.group(3)) if m.group(3) else None)


def usable_cpus(affinity: int, quota: float | None) -> int:
    return affinity if quota is None else min(affinity, max(1, math.ceil(quota)))


def want_threads(affinity: int, quota: float | None) -> int:
    return max(1, min(64, usable_cpus(affinity, quota) // 2))


def test_default_threads_are_half_the_allowed_cpus(tmp_path):
    # One reactor per two CPUs the process may use (its affinity mask, within
    # its cgroup's CPU quota; at least 1, at most 64): on 2 CPUs shared with
    # clients, a reactor per CPU cost more CPU per operation and several times
    # the p99 (bench/RESULTS.md).
    threads, affinity, quota = stopped_server_figures(*start(
        ["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"], tmp_path))
    assert affinity == len(os.sched_getaffinity(0))
    assert threads == want_threads(affinity, quota)


IN_CPU_QUOTA = Path(__file__).resolve().parents[2] / "scripts" / "in-cpu-quota"


@pytest.mark.parametrize("cpus", [0.5, 1.5])
def test_default_threads_follow_a_cgroup_cpu_quota(tmp_path, cpus):
    # Kubernetes' CPU limit is a cgroup quota, not an affinity mask: on a
    # 64-CPU node limited to 4 CPUs, the mask alone would start 32 reactors.
    # The server reads the quota of its own cgroup from the kernel's files and
    # reports it; with more CPUs in the mask than the quota allows, it starts
    # fewer reactors than the mask alone gives.
    name = f"ringstore-test-{os.getpid()}"
    wrap = [sys.executable, str(IN_CPU_QUOTA), "--name", name, str(cpus)]
    args = ["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"]
    try:
        p, port, err = start_ringstore_args(args, tmp_path, wrap=wrap)
        if port is None and reap(p, 10) == 77:  # the script's "cannot here"
            pytest.skip(err.read_text().strip())
        assert port is not None, err.read_text()
        threads, affinity, quota = stopped_server_figures(p, port, err)
        # Two reactors given: warned of exactly when they are more than the
        # usable CPUs (a quota of 0.5 CPUs: 1; of 1.5: 2 within a mask of 2).
        p, port, err = start(args + ["--threads", "2"], tmp_path, name="two", wrap=wrap)
        stopped_server_figures(p, port, err)
        two_log = err.read_text()
    finally:
        subprocess.run([sys.executable, str(IN_CPU_QUOTA), "--remove", name], check=True)
    usable = usable_cpus(affinity, cpus)
    assert ("WARN 2 reactors on 1 usable CPU:" in two_log) == (usable == 1), two_log
    assert quota == cpus
    assert threads == want_threads(affinity, quota)


def test_more_reactors_than_cpus_are_warned_of(tmp_path):
    # More reactors than CPUs is allowed (a user's choice) but costs CPU per
    # operation and latency: one warning says so and names the default.
    affinity = len(os.sched_getaffinity(0))
    for threads, warned in ((affinity + 1, True), (1, False)):
        p, port, err = start(["--port", "0", "--bind", "127.0.0.1", "--log-level", "info",
                              "--threads", str(threads)], tmp_path, name=f"t{threads}")
        got, _, _ = stopped_server_figures(p, port, err)
        assert got == threads
        line = (f"WARN {threads} reactors on {affinity} usable CPU{'s' if affinity > 1 else ''}: "
                f"reactors beyond the CPUs cost CPU per operation and latency; the default "
                f"(leave out --threads) is {want_threads(affinity, None)}")
        assert (line in err.read_text()) == warned, err.read_text()


def test_small_receive_ring_keeps_the_default_minimum_in_range(tmp_path):
    # The default --recv-buffers-min (64) is above a 16-buffer ring: it
    # follows the ring down instead of refusing to start.
    p, port, _ = start(["--port", "0", "--bind", "127.0.0.1",
                        "--recv-buffers", "16"], tmp_path)
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_dual_stack_default_bind(tmp_path):
    p, port, _ = start(["--port", "0"], tmp_path)
    torch_roundtrip(port, "127.0.0.1")
    if socket.has_ipv6:
        torch_roundtrip(port, "::1")
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_listen_fd(tmp_path):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    p, shown, _ = start(["--listen-fd", str(fd)], tmp_path, pass_fds=[fd])
    lsock.close()  # the server holds its own copy now
    assert shown == port
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_listen_fd_bound_but_not_listening(tmp_path):
    """As TCPStore(master_listen_fd=) does: a bound socket gets listen() from us."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    p, shown, _ = start(["--listen-fd", str(fd), "--backlog", "64"], tmp_path, pass_fds=[fd])
    # the server's listen() is visible through our copy of the socket too
    assert lsock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    lsock.close()
    assert shown == port
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


@pytest.mark.parametrize("kind, needle", [
    ("unbound", "not bound to a port"),
    ("udp", "not a TCP socket"),
    ("unix", "not a TCP socket"),
    ("pipe", "Socket operation on non-socket"),
])
def test_listen_fd_that_cannot_serve(kind, needle):
    if kind == "pipe":
        r_end, w_end = os.pipe()
        objs, fd = [r_end, w_end], r_end
    else:
        fam, typ = {"unbound": (socket.AF_INET, socket.SOCK_STREAM),
                    "udp": (socket.AF_INET, socket.SOCK_DGRAM),
                    "unix": (socket.AF_UNIX, socket.SOCK_STREAM)}[kind]
        s = socket.socket(fam, typ)
        if kind == "udp":
            s.bind(("127.0.0.1", 0))
        objs, fd = [s], s.fileno()
    try:
        r = subprocess.run([str(ringstore_bin()), "--listen-fd", str(fd)],
                           pass_fds=[fd], capture_output=True, text=True, timeout=10)
    finally:
        for o in objs:
            o.close() if hasattr(o, "close") else os.close(o)
    assert r.returncode == 1
    assert f"--listen-fd {fd}: {needle}" in r.stderr, r.stderr


def test_systemd_socket_activation(tmp_path):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    # As systemd does: the socket as fd 3, our pid in LISTEN_PID. The shell
    # moves the socket to fd 3, names its own pid and execs (pid kept). The
    # --port given is ignored in favour of the inherited socket.
    script = f'exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --port 1'
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = spawn(["bash", "-c", script, str(ringstore_bin())], stdout=fo, stderr=fe,
                  stdin=subprocess.DEVNULL, pass_fds=[fd])
    lsock.close()
    deadline = time.monotonic() + 10
    while not out.read_text().endswith("\n"):
        assert p.poll() is None, err.read_text()
        assert time.monotonic() < deadline, "no listening line"
        time.sleep(0.01)
    m = re.match(r"^ringstore listening on (\S+):(\d+)$", out.read_text().splitlines()[0])
    assert m and int(m.group(2)) == port
    torch_roundtrip(port)
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_raises_open_file_limit(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("no finite hard limit above 256 to raise to")

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = spawn([str(ringstore_bin()), "--port", "0", "--bind", "127.0.0.1"], stdout=fo,
                  stderr=fe, preexec_fn=lower)
    deadline = time.monotonic() + 10
    while not out.read_text().endswith("\n") and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(f"/proc/{p.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert int(line.split()[3]) == hard
    assert f"open-file limit: {hard}" in err.read_text()
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0


def test_idle_exit_waits_for_the_last_client(tmp_path):
    """--idle-exit S: while a store client is connected the server stays; S
    seconds after the last one left it exits 0, as on SIGTERM (what a store a
    torchrun agent started for its job does when the job is over)."""
    import torch.distributed as dist

    p, port, err = start(["--port", "0", "--bind", "127.0.0.1", "--idle-exit", "1"], tmp_path)
    s = dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False, timeout=T)
    s.set("k", "v")
    time.sleep(2.5)
    assert p.poll() is None, "exited with a client connected"
    assert s.get("k") == b"v"
    del s
    assert reap(p, 30) == 0
    log = err.read_text()
    assert "no client for 1 s (--idle-exit): shutting down" in log, log
    assert re.search(r"stats: .*accepted=1 ", log), log
