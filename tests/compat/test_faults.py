"""Fault injection (issue 7): clients that die mid-request or mid-wait, a storm of
connections, slow readers, half-open peers and SIGTERM under load.

Every test is bounded in count (and by its watchdog in time), runs on loopback
only, and asserts exact outcomes -- which connection was closed for which reason
(the `closing <peer>: ...` log line and the stats counters), which waiter was
released and how many times, and the exact stored data afterwards -- never
timings. Elapsed times are only printed as figures.

"Released exactly once" is checked on the wire: a raw waiter sends WAIT then PING
in one write; the PING echo arriving first proves the WAIT was registered and
still pending; after the wake it must read exactly one 00 byte and then the echo
of a second PING (any stale or duplicated 00 would come before that echo).

Client programs used as separate processes live at the bottom of this file
(``python test_faults.py <mode> <host> <port> ...``) so that they can be killed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import VALIDATE, RawConn, reap, req, s, spawn, u32, u64

pytestmark = [pytest.mark.ringstore_only]

ME = str(Path(__file__).resolve())
TCP_REPAIR = 19  # linux/tcp.h
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h
CLOSE_RX = re.compile(r" closing (\S+): ")
TD = datetime.timedelta


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def report(msg: str) -> None:
    """Print a figures line (shown with pytest -s, and in the captured output on failure)."""
    print(f"\n[faults] {msg}", flush=True)


def tcp_client(srv, timeout=20.0, **kw):
    """A torch client that is not kept alive by the Server object (so it can be dropped)."""
    import torch.distributed as dist

    return dist.TCPStore(srv.host, srv.port, is_master=False, timeout=TD(seconds=timeout), **kw)


def child(srv, mode: str, *args) -> subprocess.Popen:
    return spawn([sys.executable, ME, mode, srv.host, str(srv.port), *map(str, args)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_line(p: subprocess.Popen, prefix: str, timeout: float = 30.0) -> str:
    """Next stdout line of child p, which must start with prefix."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"child {p.args[2]} printed nothing in {timeout}s")
    finally:
        sel.close()
    line = p.stdout.readline()
    if not line:
        p.wait(5)
        raise AssertionError(f"child {p.args[2]} exited rc={p.returncode}: {p.stderr.read()[-3000:]}")
    assert line.startswith(prefix), line
    return line.strip()


def kill9(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    assert reap(p, 10) == -signal.SIGKILL


def closes(srv) -> list[str]:
    """Peers of every `closing <peer>: ...` line so far (debug level logs them all)."""
    return CLOSE_RX.findall(srv.log())


def wait_closes(srv, n: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        got = closes(srv)
        if len(got) >= n:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(got)} of {n} closes logged; log tail:\n{srv.log_tail()}")
        time.sleep(0.05)


def peer_of(sock: socket.socket) -> str:
    h, p = sock.getsockname()[:2]
    return f"{h}:{p}"


def raw_waiter(srv, key: bytes, nonce: int = 0x5157) -> RawConn:
    """A raw connection whose WAIT on key is registered and pending (see module doc)."""
    c = srv.raw(timeout=20)
    c.send(req("WAIT", u64(1), s(key)) + req("PING", u32(nonce)))
    assert c.recv_exact(4) == u32(nonce), "WAIT answered before the PING: key already present"
    return c


def assert_released_once(c: RawConn, nonce: int = 0x7A11) -> None:
    assert c.recv_exact(1) == b"\x00"
    assert_no_stray_bytes(c, nonce)


def assert_no_stray_bytes(c: RawConn, nonce: int = 0x7A12) -> None:
    c.send(req("PING", u32(nonce)))
    got = c.recv_exact(4)
    assert got == u32(nonce), f"stray reply bytes before the PING echo: {got!r}"


def proc_blocked_in_poll(pid: int) -> int:
    """Threads of pid currently inside poll()/ppoll() (torch awaits WAIT/BARRIER replies so)."""
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            nr = open(f"/proc/{pid}/task/{t}/syscall").read().split()[0]
        except (OSError, IndexError):
            continue
        n += nr in ("7", "271")
    return n


def closed_total(st: dict) -> int:
    return sum(st[k] for k in ("eof", "io", "proto", "bad_number", "nomem", "memory_limit",
                               "slow_reader", "handshake_timeout", "conn_limit", "not_allowed",
                               "shutdown"))


# --------------------------------------------------------------------------------------
# 1. clients killed mid-request and mid-wait
# --------------------------------------------------------------------------------------

@pytest.mark.timeout_s(60)
def test_client_killed_mid_request(server_factory):
    """SIGKILL a process that has sent 1 MiB of a 4 MiB SET: nothing is stored, the
    partial request dies with its connection (EOF), and a concurrent split SET on
    another connection completes intact."""
    srv = server_factory()
    good = srv.client()
    good.set("before", "x")
    nkeys = good.num_keys()
    other = srv.raw()
    other.send(req("SET", s(b"/split"), u64(1 << 20)) + b"a" * (1 << 19))  # half of it

    p = child(srv, "half_set")
    peer = child_line(p, "sent ").split()[1]
    kill9(p)
    srv.wait_log(rf"closing {re.escape(peer)}: ")
    assert closes(srv) == [peer]

    other.send(b"b" * (1 << 19))  # the other half
    assert good.get("split") == b"a" * (1 << 19) + b"b" * (1 << 19)
    assert not good.check(["big"]), "a partial SET from a dead client was stored"
    assert good.num_keys() == nkeys + 1
    good.set("after", "y")
    assert good.get("before") == b"x" and good.get("after") == b"y"
    other.close()
    wait_closes(srv, 2)
    st = srv.stats()
    # good + other + the killed child
    assert st["accepted"] == 3 and st["active"] == 0
    assert st["eof"] == 2 and st["shutdown"] == 1 and closed_total(st) == 3
    assert st["bytes_in"] >= 5 * (1 << 20) // 4
    report(f"killed mid-request: 1 child SIGKILLed after 1 MiB of a 4 MiB SET; closes eof=2 "
           f"shutdown=1; partial value stored: no; concurrent split SET intact; data lost: none")


@pytest.mark.timeout_s(90)
def test_client_killed_mid_wait(server_factory):
    """SIGKILL a process holding four blocked connections: torch wait(['w']),
    barrier('b', 3), queue_pop('q') (blocking) and a raw WAIT ['/w'] whose
    registration is proven. Its waits are withdrawn (new connections reusing the
    slots get no stray wake-up, the live waiters on the same keys are released
    exactly once, QUEUE_PUSH's single wake goes to the live waiter) and the
    barrier keeps the dead rank's arrival."""
    srv = server_factory()
    good = srv.client()
    p = child(srv, "blockers")
    pid = int(child_line(p, "blocked ").split()[1])
    # the barrier arrival is visible as the counter; the three torch threads are in
    # poll() waiting for their replies, i.e. their requests were sent
    deadline = time.monotonic() + 20
    while not (good.check(["b"]) and proc_blocked_in_poll(pid) >= 3):
        assert time.monotonic() < deadline, "blockers did not block"
        time.sleep(0.05)
    assert good.get("b") == b"1"
    good.set("sync", "1")  # one more round trip after the requests were sent
    kill9(p)
    dead = wait_closes(srv, 4)
    assert len(dead) == 4

    # new connections (they may reuse the dead ones' slots) must see no stray bytes
    reuse = [srv.raw() for _ in range(6)]
    # live waiters on the same keys
    w = raw_waiter(srv, b"/w", 1)
    q = raw_waiter(srv, b"/q", 2)
    c1, c2 = tcp_client(srv), tcp_client(srv)
    released = []
    t = threading.Thread(target=lambda: released.append(c1.barrier("b", 3, TD(seconds=20))))
    t.start()
    deadline = time.monotonic() + 20
    while good.get("b") != b"2":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not released  # 2 of 3 arrived (dead rank counted): still blocked
    c2.barrier("b", 3, TD(seconds=20))  # third arrival: releases c1 and itself
    t.join(20)
    assert not t.is_alive() and len(released) == 1
    assert good.get("b") == b"3"

    good.queue_push("q", "item1")  # wakes exactly one waiter: must be the live one
    assert_released_once(q, 3)
    q.send(req("QUEUE_POP", s(b"/q")))
    assert q.recv_i64() == 1 and q.recv_bytes() == b"item1"
    assert good.queue_len("q") == 0

    good.set("w", "go")
    assert_released_once(w, 4)
    for i, r in enumerate(reuse):
        assert_no_stray_bytes(r, 100 + i)
    good.set("w", "again")  # no waiter left at all
    for i, r in enumerate(reuse + [w]):
        assert_no_stray_bytes(r, 200 + i)
    assert good.get("w") == b"again" and good.get("sync") == b"1"

    st = srv.stats()
    # good + 4 dead + 6 reuse + w + q + c1 + c2
    assert st["accepted"] == 15 and st["active"] == 0
    assert st["eof"] == 4 and st["shutdown"] == 11 and closed_total(st) == 15
    report("killed mid-wait: 1 process / 4 blocked connections (wait, barrier, queue_pop, raw "
           "WAIT) SIGKILLed; closes eof=4; barrier count kept the dead arrival (1 -> 3 with 2 "
           "live ranks, each released once); queue push woke the live waiter; 7 live raw "
           "connections saw 0 stray bytes; data lost: none")


# --------------------------------------------------------------------------------------
# 2. a storm of connections under load
# --------------------------------------------------------------------------------------

STORM_CONNS = 10_000
STORM_BATCH = 2_000
STORM_SOURCES = 8  # 127.0.0.1 .. 127.0.0.8
STORM_CLIENTS = 4
ROUND_OPS = 20


def _storm_worker(srv, idx: int, store, stop: threading.Event, out: dict):
    """Rounds of ADD/SET/GET/WAIT; after each round a barrier of all workers, then
    worker 0 decides (go/<r>) whether another round follows; the others block in
    wait() for that decision."""
    rounds = ops = 0
    try:
        for r in range(10_000):
            for j in range(ROUND_OPS):
                store.add("ctr", 1)
                store.add(f"per/{idx}", 1)
                store.set(f"s/{idx}/{j}", f"{r}.{j}")
                assert store.get(f"s/{idx}/{j}") == f"{r}.{j}".encode()
                store.wait([f"s/{idx}/{j}"])
                ops += 5
            store.barrier(f"round/{r}", STORM_CLIENTS, TD(seconds=30))
            rounds += 1
            if idx == 0:
                store.set(f"go/{r}", "0" if stop.is_set() else "1")
            else:
                store.wait([f"go/{r}"], TD(seconds=30))
            if store.get(f"go/{r}") == b"0":
                break
        out[idx] = (rounds, ops)
    except BaseException as e:  # reported by the main thread
        out[idx] = e


def _storm(port: int, kinds: dict) -> None:
    """Open STORM_CONNS connections, at most STORM_BATCH at once, from several source
    addresses. Kinds (by index % 6): 0 handshake + PING then close, 1 VALIDATE only
    then close, 2 no data then close, 3 handshake + PING then RST (SO_LINGER 0),
    4 handshake + WAIT on /storm/w (registered: the PING after it is echoed) then
    close, 5 a partial VALIDATE (3 of 5 bytes) then close."""
    hello = VALIDATE + req("PING", u32(0xC0FFEE))
    waiter = VALIDATE + req("WAIT", u64(1), s(b"/storm/w")) + req("PING", u32(0xC0FFEE))
    done = 0
    while done < STORM_CONNS:
        n = min(STORM_BATCH, STORM_CONNS - done)
        socks = []
        for k in range(done, done + n):
            sk = socket.socket()
            sk.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sk.bind((f"127.0.0.{1 + k % STORM_SOURCES}", 0))
            sk.settimeout(20)
            sk.connect(("127.0.0.1", port))
            kind = k % 6
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind in (0, 3):
                sk.sendall(hello)
            elif kind == 1:
                sk.sendall(VALIDATE)
            elif kind == 4:
                sk.sendall(waiter)
            elif kind == 5:
                sk.sendall(VALIDATE[:3])
            socks.append((kind, sk))
        for kind, sk in socks:
            if kind in (0, 3, 4):
                got = b""
                while len(got) < 4:
                    chunk = sk.recv(4 - len(got))
                    assert chunk, "storm connection closed before the PING echo"
                    got += chunk
                assert got == u32(0xC0FFEE)
        for kind, sk in socks:
            if kind == 3:
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sk.close()
        done += n


@pytest.mark.timeout_s(120)
def test_connection_storm_under_load(server_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < STORM_BATCH + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {STORM_BATCH + 500}")
    srv = server_factory()  # inherits the raised limit
    stores = [tcp_client(srv, timeout=30) for _ in range(STORM_CLIENTS)]
    stop = threading.Event()
    out: dict = {}
    workers = [threading.Thread(target=_storm_worker, args=(srv, i, stores[i], stop, out))
               for i in range(STORM_CLIENTS)]
    for t in workers:
        t.start()
    kinds: dict = {}
    t0 = time.monotonic()
    try:
        _storm(srv.port, kinds)
    finally:
        storm_s = time.monotonic() - t0
        stop.set()
        for t in workers:
            t.join(60)
    assert all(not t.is_alive() for t in workers), "a worker hung"
    errs = {i: v for i, v in out.items() if isinstance(v, BaseException)}
    assert not errs, errs
    rounds = {v[0] for v in out.values()}
    assert len(rounds) == 1, out  # all workers ran the same rounds
    nrounds = rounds.pop()
    check = stores[0]
    assert check.get("ctr") == str(STORM_CLIENTS * nrounds * ROUND_OPS).encode()
    for i in range(STORM_CLIENTS):
        assert check.get(f"per/{i}") == str(nrounds * ROUND_OPS).encode()
        assert check.multi_get([f"s/{i}/{j}" for j in range(ROUND_OPS)]) == [
            f"{nrounds - 1}.{j}".encode() for j in range(ROUND_OPS)]
    for r in range(nrounds):
        assert check.get(f"round/{r}") == str(STORM_CLIENTS).encode()
    assert check.get(f"go/{nrounds - 1}") == b"0"
    nkeys = check.num_keys()
    assert nkeys == 1 + STORM_CLIENTS * (1 + ROUND_OPS) + 2 * nrounds
    ops = sum(v[1] for v in out.values())
    # the storm's dropped waiters on /storm/w were withdrawn: one live waiter, one wake
    live = raw_waiter(srv, b"/storm/w")
    check.set("storm/w", "1")
    assert_released_once(live)
    live.close()
    del check, stores
    import gc

    gc.collect()
    total = STORM_CONNS + STORM_CLIENTS + 1
    wait_closes(srv, total, timeout=60)
    st = srv.stats()
    assert st["accepted"] == total, st
    assert st["active"] == 0 and st["shutdown"] == 0
    assert st["rejected"] == 0 and st["accept_errors"] == 0
    assert st["io"] == kinds[3], st  # the RST closes
    assert st["eof"] == total - kinds[3], st
    assert closed_total(st) == total
    sources = {p.rsplit(":", 1)[0] for p in closes(srv)}
    assert sources == {f"127.0.0.{i}" for i in range(1, STORM_SOURCES + 1)}
    assert st["handshake_timeout"] == 0 and st["proto"] == 0
    report(f"storm: {STORM_CONNS} connections (<= {STORM_BATCH} open at once, {STORM_SOURCES} "
           f"source addresses, kinds {dict(sorted(kinds.items()))}) in {storm_s:.1f}s while "
           f"{STORM_CLIENTS} torch clients did {ops} ops in {nrounds} barrier rounds; "
           f"{kinds[4]} registered waiters dropped, then 1 live waiter on their key woken once; "
           f"accepted={st['accepted']} eof={st['eof']} io(RST)={st['io']} active=0; "
           f"counters exact; data lost: none")


# --------------------------------------------------------------------------------------
# 3. a slow reader with pipelined MULTI_GETs
# --------------------------------------------------------------------------------------

@pytest.mark.timeout_s(60)
def test_slow_multi_get_reader_does_not_stall_others(server_factory):
    """A raw client pipelines MULTI_GETs of 4 x 32 KiB and never reads; meanwhile two
    torch clients each complete N mixed operations with exact results. The slow one is
    closed as slow_reader; the others' op counts are the figures."""
    N = 300
    srv = server_factory("--max-output-bytes", "1M")
    setup = srv.client()
    vals = {f"m{i}": bytes([65 + i]) * 32768 for i in range(4)}
    setup.multi_set(list(vals), list(vals.values()))
    # Stored before the slow reader asks (MULTI_SET has no reply; with
    # several reactors the raw connection's requests could run first).
    assert setup.multi_get(list(vals)) == list(vals.values())

    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", srv.port))
    slow.settimeout(20)
    slow_peer = peer_of(slow)
    mget = req("MULTI_GET", u64(4), *(s(f"/{k}".encode()) for k in vals))
    sent = [0]
    closed_seen = threading.Event()
    progress_at_close: list = []
    done = [0, 0]

    def flood():
        try:
            slow.sendall(VALIDATE)
            for _ in range(2000):  # at most 256 MiB of replies; each request is small
                slow.sendall(mget * 4)
                sent[0] += 4
                time.sleep(0.002)
        except OSError:
            pass

    def watch():
        try:
            srv.wait_log(rf"closing {re.escape(slow_peer)}: .*\(slow_reader\)", timeout=30)
        except AssertionError:
            return
        progress_at_close.append(tuple(done))
        closed_seen.set()

    def good(i, store):
        for j in range(N):
            assert store.multi_get(list(vals)) == list(vals.values())
            assert store.add("n", 1) >= 1
            store.set(f"g{i}", str(j))
            assert store.get(f"g{i}") == str(j).encode()
            done[i] += 1

    stores = [srv.client(), srv.client()]
    threads = [threading.Thread(target=flood), threading.Thread(target=watch)]
    threads += [threading.Thread(target=good, args=(i, stores[i])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    assert not any(t.is_alive() for t in threads)
    assert closed_seen.is_set(), "slow reader was not closed"
    assert done == [N, N]
    assert setup.get("n") == str(2 * N).encode()
    assert setup.get("g0") == setup.get("g1") == str(N - 1).encode()
    assert setup.multi_get(list(vals)) == list(vals.values())
    slow.close()
    st = srv.stats()
    assert st["slow_reader"] == 1 and st["accepted"] == 4 and st["shutdown"] == 3
    report(f"slow MULTI_GET reader: sent {sent[0]} pipelined MULTI_GETs (4 x 32 KiB each) "
           f"without reading, closed as slow_reader; the 2 other clients had done "
           f"{progress_at_close[0]} of {N} ops each when it was closed and then finished all "
           f"{N} (4 ops each) with exact results; data lost: none")


# --------------------------------------------------------------------------------------
# 4. half-closed and half-open (vanished) peers
# --------------------------------------------------------------------------------------

@pytest.mark.timeout_s(60)
def test_half_closed_waiter_is_released(server_factory):
    """Simulated: shutdown(SHUT_WR) by a client with a registered WAIT (a FIN while it
    still reads). The server treats EOF as a close: it closes the connection without
    sending the 00 byte, withdraws the wait, and a later SET releases only the live
    waiter, once."""
    srv = server_factory()
    good = srv.client()
    a = raw_waiter(srv, b"/h", 1)
    a_peer = peer_of(a.sock)
    a.sock.shutdown(socket.SHUT_WR)
    a.expect_eof()
    line = srv.wait_log(rf"closing {re.escape(a_peer)}: ")
    b = raw_waiter(srv, b"/h", 2)
    good.set("h", "1")
    assert_released_once(b, 3)
    a.close()
    st = srv.stats()
    assert st["eof"] == 1 and st["accepted"] == 3 and st["shutdown"] == 2
    report(f"half-close: waiter shut down its write side; server log {line.split(' ', 2)[2]!r}; "
           f"live waiter released once; data lost: none")


@pytest.mark.timeout_s(60)
def test_vanished_peer_detected_on_next_write(server_factory):
    """Simulated: a peer that disappears without FIN or RST (host lost). The client
    socket is put into TCP_REPAIR mode and closed, which drops it silently; the
    server's connection stays ESTABLISHED with its WAIT registered (nothing on the
    wire can tell it otherwise until the keepalive, 60 s by default, probes it;
    test_limits.py covers that). The SET that wakes it
    makes the server send 00 to the vanished peer, the kernel answers RST, and the
    server closes the connection as a socket error (io). A live waiter on the same
    key is released exactly once."""
    srv = server_factory()
    good = srv.client()
    v = raw_waiter(srv, b"/v", 1)
    v_peer = peer_of(v.sock)
    try:
        v.sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except PermissionError:
        pytest.skip("TCP_REPAIR needs CAP_NET_ADMIN")
    v.sock.close()  # no FIN, no RST
    w = raw_waiter(srv, b"/v", 2)
    good.set("other", "1")
    assert good.get("other") == b"1"
    assert v_peer not in closes(srv), "server saw a close that was never sent"
    good.set("v", "1")
    line = srv.wait_log(rf"closing {re.escape(v_peer)}: ")
    assert "(Connection reset by peer)" in line or "(Broken pipe)" in line, line
    assert_released_once(w, 3)
    assert good.get("v") == b"1"
    st = srv.stats()
    assert st["io"] == 1 and st["accepted"] == 3 and st["shutdown"] == 2 and st["eof"] == 0
    report(f"vanished peer (TCP_REPAIR close, no FIN/RST): kept open while idle, closed on "
           f"the wake-up write: {line.split(' ', 2)[2]!r}; live waiter released once")


# --------------------------------------------------------------------------------------
# 5. SIGTERM under load
# --------------------------------------------------------------------------------------

@pytest.mark.timeout_s(90)
def test_sigterm_under_load(server_factory):
    """4 client processes, each with a hammering connection (SET/GET/ADD/APPEND/
    MULTI_GET/CHECK/queue, no pause) and a connection blocked in wait(); SIGTERM the
    server. It exits 0 with its stats line (8 connections closed as shutdown); every
    client connection gets a network error (not a timeout, not a hang)."""
    NPROC = 4
    srv = server_factory()
    procs = [child(srv, "hammer", i) for i in range(NPROC)]
    for p in procs:
        child_line(p, "running", timeout=60)
    t0 = time.monotonic()
    rc = srv.stop(timeout=15)
    exit_s = time.monotonic() - t0
    assert rc == 0, f"exit code {rc}; log tail:\n{srv.log_tail()}"
    st = srv.stats()
    assert st["accepted"] == 2 * NPROC and st["active"] == 0
    assert st["shutdown"] == 2 * NPROC and closed_total(st) == 2 * NPROC
    assert not re.search(r"Sanitizer|runtime error|ERROR", srv.log())
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        reap(p)
        assert p.returncode == 0, err[-3000:]
        lines = [json.loads(l[7:]) for l in out.splitlines() if l.startswith("result ")]
        assert len(lines) == 1, out
        results.append(lines[0])
    for r in results:
        for kind in ("hammer", "waiter"):
            assert r[kind]["type"] == "DistNetworkError", r
            assert "timeout" not in r[kind]["msg"].lower(), r
    ops = sum(r["ops"] for r in results)
    report(f"SIGTERM under load: {NPROC} processes / {2 * NPROC} connections, {ops} ops done "
           f"before the signal; server exit 0 after {exit_s:.2f}s with stats shutdown="
           f"{st['shutdown']}; all {2 * NPROC} client connections got DistNetworkError, "
           f"0 hangs, 0 timeouts")


# --------------------------------------------------------------------------------------
# child programs
# --------------------------------------------------------------------------------------

def _child_half_set(host, port):
    c = RawConn(host, int(port), timeout=60)
    c.handshake()
    c.send(req("SET", s(b"/big"), u64(4 << 20)) + b"v" * (1 << 20))
    print("sent", peer_of(c.sock), flush=True)
    time.sleep(120)


def _child_blockers(host, port):
    import torch.distributed as dist

    def mk():
        return dist.TCPStore(host, int(port), is_master=False, timeout=TD(seconds=120))

    a, b, q = mk(), mk(), mk()
    raw = RawConn(host, int(port), timeout=120)
    raw.handshake()
    raw.send(req("WAIT", u64(1), s(b"/w")) + req("PING", u32(9)))
    assert raw.recv_exact(4) == u32(9)  # WAIT registered and pending
    for f in (lambda: a.wait(["w"]), lambda: b.barrier("b", 3), lambda: q.queue_pop("q")):
        threading.Thread(target=f, daemon=True).start()
    print("blocked", os.getpid(), flush=True)
    time.sleep(120)


def _child_hammer(host, port, idx):
    import torch.distributed as dist

    def mk():
        return dist.TCPStore(host, int(port), is_master=False, timeout=TD(seconds=120))

    res = {"ops": 0}
    h, w = mk(), mk()

    def record(kind, e):
        res[kind] = {"type": type(e).__name__, "msg": str(e)[:300]}

    def waiter():
        try:
            w.wait(["never"], TD(seconds=120))
            res["waiter"] = {"type": "returned", "msg": ""}
        except Exception as e:
            record("waiter", e)

    t = threading.Thread(target=waiter)
    t.start()
    try:
        i = 0
        while True:
            h.set(f"h{idx}/{i % 8}", "x" * (i % 512))
            assert h.get(f"h{idx}/{i % 8}") == b"x" * (i % 512)
            h.add(f"c{idx}", 1)
            h.append(f"a{idx}", "y")
            h.multi_get([f"h{idx}/0", f"c{idx}"])
            h.check([f"c{idx}"])
            h.queue_push(f"q{idx}", "z")
            h.queue_pop(f"q{idx}", block=False)
            res["ops"] += 8
            i += 1
            if i == 50:
                print("running", flush=True)
    except Exception as e:
        record("hammer", e)
    t.join(60)
    print("result " + json.dumps(res), flush=True)


if __name__ == "__main__":
    mode, host, port, *rest = sys.argv[1:]
    {"half_set": _child_half_set, "blockers": _child_blockers,
     "hammer": _child_hammer}[mode](host, port, *rest)
