"""The control plane over real HTTP (issue 6).

The server runs with ``--control-port 0`` (an ephemeral port on 127.0.0.1) or
``--control-socket PATH`` and prints a second stdout line,
``ringstore control on ADDR:PORT``. conftest's starter insists on exactly one
stdout line, so this file starts its servers itself (with conftest's process
registry, so the watchdog still covers them).

Covered: every endpoint and built-in handler, the errors for bad requests
(400/404/405/411/413/431/505, and that refused connections are closed),
keep-alive and pipelining, metrics that change as store clients connect and
operate (parsed with prometheus_client's text parser), and the waiters and
barriers views during a pending rendezvous. ringstore only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (Server, i64, io_flags, req, ringstore_bin, s, spawn, u32, u64,
                      unregister_proc, kill_group)

pytestmark = pytest.mark.ringstore_only

LISTEN_RX = re.compile(r"^ringstore listening on (\S+):(\d+)\s*$")
CONTROL_RX = re.compile(r"^ringstore control on (\S+):(\d+)\s*$")


class ControlServer(Server):
    """A ringstore server with its control plane address."""

    control: tuple[str, int] | None = None
    control_socket: str | None = None


def _start(tmp_path, *flags, threads=1, wrap=()) -> ControlServer:
    binary = ringstore_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"ringstore binary not found at {binary}", pytrace=False)
    idx = len(list(tmp_path.glob("cp-*.err")))
    err = tmp_path / f"cp-{idx}.err"
    out = tmp_path / f"cp-{idx}.out"
    args = [*wrap, str(binary), "--port", "0", "--bind", "127.0.0.1", "--log-level", "debug",
            "--threads", str(threads), *io_flags(flags), *[str(f) for f in flags]]
    want_control_line = "--control-port" in flags
    sock_path = None
    if "--control-socket" in flags:
        sock_path = str(flags[list(flags).index("--control-socket") + 1])
    with open(err, "wb") as ferr, open(out, "wb") as fout:
        proc = spawn(args, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        text = out.read_text(errors="replace")
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        listen = [m for m in map(LISTEN_RX.match, lines) if m]
        control = [m for m in map(CONTROL_RX.match, lines) if m]
        ready = listen and (control or not want_control_line)
        if ready and sock_path and not os.path.exists(sock_path):
            ready = False
        if ready:
            srv = ControlServer("ringstore", "127.0.0.1", int(listen[0].group(2)), proc, err, out)
            if control:
                host = control[0].group(1).strip("[]")
                srv.control = (host, int(control[0].group(2)))
                assert srv.control[1] > 0
            srv.control_socket = sock_path
            return srv
        if proc.poll() is not None:
            pytest.fail(f"ringstore exited with {proc.returncode}; args={args}\n"
                        f"stdout:\n{text}\nstderr:\n{err.read_text(errors='replace')}",
                        pytrace=False)
        if time.monotonic() > deadline:
            kill_group(proc)
            pytest.fail(f"ringstore did not print its listening/control lines within 10s; "
                        f"stdout:\n{text}\nstderr:\n{err.read_text(errors='replace')}",
                        pytrace=False)
        time.sleep(0.01)


@pytest.fixture
def cp_factory(tmp_path):
    started: list[ControlServer] = []

    def make(*flags, threads=1, wrap=()) -> ControlServer:
        srv = _start(tmp_path, *flags, threads=threads, wrap=wrap)
        started.append(srv)
        return srv

    yield make
    problems = []
    for srv in started:
        if srv.exit_code is None:
            if srv.proc.poll() is not None:
                problems.append(f"{srv} died with {srv.proc.returncode}; log:\n{srv.log_tail()}")
                unregister_proc(srv.proc)
                continue
            rc = srv.stop()
            if rc != 0:
                problems.append(f"{srv} exited with {rc} on SIGTERM; log:\n{srv.log_tail()}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def cp(cp_factory) -> ControlServer:
    return cp_factory("--control-port", "0")


# --------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5.0):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connect(srv: ControlServer) -> http.client.HTTPConnection:
    if srv.control is not None:
        return http.client.HTTPConnection(*srv.control, timeout=5)
    return UnixHTTPConnection(srv.control_socket)


def call(srv, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers dict, body bytes)."""
    conn = connect(srv)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(srv, path):
    status, hdrs, body = call(srv, "GET", path)
    assert status == 200, (path, status, body)
    assert hdrs["content-type"].startswith("application/json")
    return json.loads(body)


def raw_socket(srv) -> socket.socket:
    if srv.control is not None:
        sock = socket.create_connection(srv.control, timeout=5)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(srv.control_socket)
    return sock


def read_response(sock, buf=b""):
    """Read one HTTP response from sock: (status, headers, body, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"EOF in response head; got {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("EOF in response body")
        rest += chunk
    return status, hdrs, rest[:n], rest[n:]


def assert_closed(sock, timeout=5.0):
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise AssertionError("server did not close the connection")
    assert data == b"", f"expected EOF, got {data[:100]!r}"


def scrape(srv, conn=None) -> dict:
    """GET /metrics, parsed by prometheus_client: {(sample name, labels): value}.

    With @conn (a kept-alive HTTPConnection) the scrape does not open a new
    connection, so connection counters move only with the store clients."""
    from prometheus_client.parser import text_string_to_metric_families

    if conn is None:
        status, hdrs, body = call(srv, "GET", "/metrics")
    else:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        status, hdrs, body = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    assert status == 200
    assert hdrs["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.name.startswith("ringstore_"), fam.name
        assert fam.type in ("counter", "gauge"), (fam.name, fam.type)
        assert fam.documentation, fam.name
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def metric(m, name, **labels):
    return m[(name, tuple(sorted(labels.items())))]


def backend_of(srv) -> str:
    """The I/O backend the server reports: "io_uring" or "epoll"."""
    return [k for k in scrape(srv) if k[0] == "ringstore_info"][0][1][0][1]


def threads_named(srv, prefix) -> dict[str, str]:
    """The server's threads whose name starts with @prefix: {tid: name}."""
    out = {}
    for t in Path(f"/proc/{srv.proc.pid}/task").iterdir():
        name = (t / "comm").read_text().strip()
        if name.startswith(prefix):
            out[t.name] = name
    return out


def park_and_release(waiters, setter, key: bytes):
    """Every raw connection in @waiters WAITs on @key (the echo of a PING sent
    behind it proves the WAIT is pending), then one SET from @setter releases
    them all: each must read the WAIT's 00."""
    for i, c in enumerate(waiters):
        c.send(req("WAIT", u64(1), s(key)) + req("PING", u32(i)))
    for i, c in enumerate(waiters):
        assert c.recv_exact(4) == u32(i), f"waiter {i}: WAIT answered early"
    setter.send(req("SET", s(key), s(b"now")) + req("PING", u32(7)))
    assert setter.recv_exact(4) == u32(7)
    for i, c in enumerate(waiters):
        assert c.recv_exact(1) == b"\x00", f"waiter {i}: not released"


def wait_until(fn, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------

def test_health_and_index(cp):
    assert call(cp, "GET", "/health")[::2] == (200, b"ok")
    status, hdrs, body = call(cp, "HEAD", "/health")
    assert status == 200 and body == b"" and hdrs["content-length"] == "2"
    status, _, body = call(cp, "GET", "/")
    assert status == 200 and b"/metrics" in body


def test_control_port_is_loopback(cp):
    assert cp.control[0] in ("127.0.0.1", "::ffff:127.0.0.1")


def test_handler_list_and_ping(cp):
    names = get_json(cp, "/handler/")
    assert {"keys", "waiters", "barriers", "stats", "ping"} <= set(names)
    for method in ("GET", "POST"):
        status, hdrs, body = call(cp, method, "/handler/ping")
        assert (status, body) == (200, b"pong")
    status, _, body = call(cp, "POST", "/handler/ping", body=b"ignored")
    assert (status, body) == (200, b"pong")


def test_stats_handler(cp):
    with cp.raw() as c:
        c.send(req("SET", s(b"/x"), s(b"1")) + req("PING", u32(7)))
        assert c.recv_exact(4) == u32(7)
        st = get_json(cp, "/handler/stats")
    assert st["ringstore_keys"] == 1
    assert st["ringstore_requests_total"]["SET"] == 1
    assert st["ringstore_connections_active"] == 1
    assert st["ringstore_reactors"] == 1


def test_keys_handler(cp):
    with cp.raw() as c:
        c.send(req("SET", s(b"/app/b"), s(b"two"))
               + req("SET", s(b"/app/a"), s(b"one"))
               + req("SET", s(b"/bin\xff"), s(b"\x00\x01"))
               + req("ADD", s(b"/n"), i64(5)))
        assert c.recv_i64() == 5
        k = get_json(cp, "/handler/keys")
        assert k["count"] == 4 and k["returned"] == 4 and not k["truncated"]
        keys = {e["key"]: e for e in k["keys"]}
        assert keys["/app/a"] == {"key": "/app/a", "size": 3, "value": "one"}
        assert keys["/n"]["value"] == "5"
        assert keys["/bin\u00ff"]["size"] == 2 and "value" not in keys["/bin\u00ff"]
        k = get_json(cp, "/handler/keys?prefix=%2Fapp%2F&limit=1")
        assert k["returned"] == 1 and k["truncated"]
        assert k["keys"][0]["key"] == "/app/a"
        k = get_json(cp, "/handler/keys?prefix=/app/")
        assert [e["key"] for e in k["keys"]] == ["/app/a", "/app/b"]
    status, hdrs, body = call(cp, "GET", "/handler/keys?limit=nope")
    assert status == 400 and "error" in json.loads(body)


def test_delete_prefix_removes_one_prefix(cp):
    """POST /handler/delete?prefix=P deletes the keys under P and nothing
    else. A real TCPStore client leaves keys under two prefixes, as torch's
    NCCL bootstrap does (nccl2_reconfigure/<uuid>, nccl_storekey_<n>); the
    operator deletes one, typing the '/' TCPStore puts before every key, in
    chunks of `limit` until nothing remains. GET is refused."""
    import datetime
    import uuid

    import torch.distributed as dist

    st = dist.TCPStore(cp.host, cp.port, is_master=False,
                       timeout=datetime.timedelta(seconds=20))
    ids = [str(uuid.uuid4()) for _ in range(45)]
    for u in ids:
        st.set(f"nccl2_reconfigure/{u}", u)
    for i in range(30):
        st.set(f"nccl_storekey_{i}", f"id{i}")
    st.set("nccl2_reconfigure", "not under the prefix")
    assert st.add("step", 7) == 7

    path = "/handler/delete?prefix=/nccl2_reconfigure/"
    status, hdrs, _ = call(cp, "GET", path)
    assert status == 405 and hdrs["allow"] == "POST"
    # Without the '/' nothing matches: TCPStore stored "/nccl2_reconfigure/...".
    status, _, body = call(cp, "POST", "/handler/delete?prefix=nccl2_reconfigure/")
    assert status == 200 and json.loads(body)["deleted"] == 0
    assert st.num_keys() == 45 + 30 + 2

    deleted, sample, remaining = 0, [], [45]
    while remaining[-1]:
        status, hdrs, body = call(cp, "POST", path + "&limit=20")
        assert status == 200 and hdrs["content-type"] == "application/json"
        doc = json.loads(body)
        assert doc["prefix"] == "/nccl2_reconfigure/" and doc["absent"] == 0
        assert len(doc["sample"]) == min(10, doc["deleted"])
        deleted += doc["deleted"]
        sample += doc["sample"]
        remaining.append(doc["remaining"])
    assert remaining == [45, 25, 5, 0] and deleted == 45
    assert {k.removeprefix("/nccl2_reconfigure/") for k in sample} <= set(ids)
    assert not any(st.check([f"nccl2_reconfigure/{u}"]) for u in ids)
    assert st.num_keys() == 30 + 2
    assert st.multi_get([f"nccl_storekey_{i}" for i in range(30)]) == \
        [f"id{i}".encode() for i in range(30)]
    assert st.get("nccl2_reconfigure") == b"not under the prefix"
    assert st.add("step", 1) == 8


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

def test_not_found_and_method_not_allowed(cp):
    status, hdrs, body = call(cp, "GET", "/nope")
    assert status == 404 and "error" in json.loads(body)
    status, hdrs, body = call(cp, "POST", "/handler/nope")
    assert status == 404 and "nope" in json.loads(body)["error"]
    status, hdrs, body = call(cp, "PUT", "/health")
    assert status == 405 and "GET" in hdrs["allow"]
    status, hdrs, body = call(cp, "DELETE", "/handler/keys")
    assert status == 405 and "POST" in hdrs["allow"]
    status, hdrs, body = call(cp, "POST", "/metrics")
    assert status == 405


@pytest.mark.parametrize("request_bytes,status", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /health HTTP/2.0\r\n\r\n", 505),
    (b"GET /a%zz HTTP/1.1\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    (b"POST /handler/ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"POST /handler/ping HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 413),
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
])
def test_bad_requests_answered_then_closed(cp, request_bytes, status):
    with raw_socket(cp) as sock:
        try:
            sock.sendall(request_bytes)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending an oversized request
        got, hdrs, body, _ = read_response(sock)
        assert got == status
        assert hdrs["connection"] == "close"
        assert "error" in json.loads(body)
        assert_closed(sock)
    # the server is fine afterwards
    assert call(cp, "GET", "/health")[0] == 200


def test_endless_head_is_cut_off(cp):
    # Exactly the head limit, a byte at a time at first, never a blank line.
    with raw_socket(cp) as sock:
        sock.sendall(b"G")
        sock.sendall(b"ET /")
        for _ in range(8):
            sock.sendall(b"X" * (1024 - (5 if _ == 0 else 0)))
        status, _, _, _ = read_response(sock)
        assert status == 431
        assert_closed(sock)


# --------------------------------------------------------------------------------------
# Connection handling
# --------------------------------------------------------------------------------------

def test_keep_alive(cp):
    conn = connect(cp)
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.read() == b"ok" and r.getheader("Connection") == "keep-alive"
        sock = conn.sock
        for _ in range(5):
            conn.request("GET", "/handler/ping")
            assert conn.getresponse().read() == b"pong"
        assert conn.sock is sock, "the connection was not kept alive"
    finally:
        conn.close()


def test_pipelined_requests_in_order(cp):
    with raw_socket(cp) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n\r\n"
                     b"POST /handler/ping HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /handler/ HTTP/1.1\r\n\r\n"
                     b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        rest = b""
        seen = []
        for _ in range(4):
            status, hdrs, body, rest = read_response(sock, rest)
            seen.append((status, body[:6]))
        assert seen == [(200, b"ok"), (200, b"pong"), (200, b'["barr'), (404, b'{"erro')]
        assert rest == b""
        assert_closed(sock)


def test_http10_closes(cp):
    with raw_socket(cp) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, hdrs, body, _ = read_response(sock)
        assert (status, body, hdrs["connection"]) == (200, b"ok", "close")
        assert_closed(sock)


def test_unix_socket(cp_factory, tmp_path):
    path = str(tmp_path / "control.sock")
    srv = cp_factory("--control-socket", path)
    assert srv.control is None
    assert call(srv, "GET", "/health")[::2] == (200, b"ok")
    assert "ping" in get_json(srv, "/handler/")
    scrape(srv)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------

def test_metrics_parse_and_families(cp):
    m = scrape(cp)
    names = {k[0] for k in m}
    for want in ("ringstore_connections_active", "ringstore_connections_accepted_total",
                 "ringstore_connections_closed_total", "ringstore_requests_total",
                 "ringstore_received_bytes_total", "ringstore_sent_bytes_total",
                 "ringstore_keys", "ringstore_stored_bytes", "ringstore_waiters",
                 "ringstore_queue_items", "ringstore_protocol_errors_total",
                 "ringstore_reactor_loop_iterations_total",
                 "ringstore_reactor_completions_total", "ringstore_resident_memory_bytes"):
        assert want in names, want
    assert metric(m, "ringstore_resident_memory_bytes") > 0
    assert metric(m, "ringstore_reactor_loop_iterations_total", reactor="0") > 0
    assert ("ringstore_requests_total", (("op", "BARRIER"),)) in m
    assert ("ringstore_connections_closed_total", (("reason", "eof"),)) in m
    assert ("ringstore_protocol_errors_total", (("kind", "bad_magic"),)) in m


def _asan_build() -> bool:
    return b"__asan_init" in ringstore_bin().read_bytes()


def test_metrics_entry_slabs(cp):
    """ringstore_entry_slab_bytes: entries of up to 512 bytes come from 2 MiB
    slabs (malloc'd entries under ASan: 0). 20,000 keys of 64-byte values
    are 20,000 blocks of 112 bytes in 128-byte slots: 2.56 MB, so at least
    two slabs; deleting them keeps the slabs (free blocks are reused)."""
    m0 = scrape(cp)
    assert metric(m0, "ringstore_entry_slab_bytes", state="pooled") <= metric(
        m0, "ringstore_entry_slab_bytes", state="carved")
    c = cp.raw()
    keys = [f"/slab{i:011d}".encode() for i in range(20000)]  # 16-byte keys
    for n in range(0, len(keys), 1000):
        batch = keys[n:n + 1000]
        c.send(req("MULTI_SET", i64(len(batch)), *(s(k) + s(b"v" * 64) for k in batch))
               + req("PING", u32(n)))
        assert c.recv_exact(4) == u32(n)
    m1 = scrape(cp)
    carved = metric(m1, "ringstore_entry_slab_bytes", state="carved")
    if _asan_build():
        assert carved == 0 and metric(m1, "ringstore_entry_slab_bytes", state="pooled") == 0
        return
    assert carved >= 2 * (2 << 20) and carved % (2 << 20) == 0, carved
    for n in range(0, len(keys), 1000):
        c.send(b"".join(req("DELETE_KEY", s(k)) for k in keys[n:n + 1000]))
        for _ in keys[n:n + 1000]:
            assert c.recv_i64() == 1
    m2 = scrape(cp)
    assert metric(m2, "ringstore_keys") == metric(m1, "ringstore_keys") - len(keys)
    assert metric(m2, "ringstore_entry_slab_bytes", state="carved") == carved
    assert metric(m2, "ringstore_entry_slab_bytes", state="pooled") <= carved


@pytest.mark.parametrize("cache", ["on", "off"])
def test_metrics_count_mget_cache(cp_factory, cache):
    """ringstore_mget_cache_total: one build, then hits for identical 100-key
    MULTI_GETs; a write makes the next one a build again; none with it off."""
    srv = cp_factory("--control-port", "0", "--mget-cache", cache)
    st = srv.client()
    keys = [f"k{i:03d}" for i in range(100)]
    vals = [f"v{i}".encode() for i in range(100)]
    st.multi_set(keys, vals)
    for _ in range(3):
        assert st.multi_get(keys) == vals
    st.set("k005", "w")
    vals[5] = b"w"
    assert st.multi_get(keys) == vals
    m = scrape(srv)
    on = cache == "on"
    assert metric(m, "ringstore_mget_cache_total", kind="build") == (2 if on else 0)
    assert metric(m, "ringstore_mget_cache_total", kind="hit") == (2 if on else 0)


@pytest.mark.parametrize("fixed", ["on", "off"])
def test_metrics_count_registered_files(cp_factory, fixed):
    """ringstore_registered_files_total: with io_uring and --fixed-files on,
    every client socket goes into the registered files (its sends then name
    the slot) and is released when its connection ends; none with it off or
    on epoll. The clients' answers are checked across slot reuse."""
    srv = cp_factory("--control-port", "0", "--fixed-files", fixed, threads=2)
    backend = backend_of(srv)
    n = 24
    import datetime

    import torch.distributed as dist

    for round_ in range(2):  # the second round reuses the first's slots
        # Not srv.client(): the server object keeps those open.
        clients = [dist.TCPStore(srv.host, srv.port, is_master=False,
                                 timeout=datetime.timedelta(seconds=30))
                   for _ in range(n)]
        for i, st in enumerate(clients):
            st.set(f"r{round_}-{i}", f"v{i}")
        for i, st in enumerate(clients):
            assert st.get(f"r{round_}-{i}") == f"v{i}".encode()
            assert st.add(f"n{round_}", 1) == i + 1
        del clients, st
    on = fixed == "on" and backend == "io_uring"
    hc = connect(srv)  # one control connection, itself possibly registered

    def settled():
        m = scrape(srv, hc)
        got = {e: metric(m, "ringstore_registered_files_total", event=e)
               for e in ("registered", "failed", "released")}
        # Only the control connection may still hold a registered slot.
        return got if got["registered"] - got["released"] <= 1 else None

    try:
        got = wait_until(settled, what="every client's socket released")
    finally:
        hc.close()
    assert got["failed"] == 0
    if on:
        assert got["registered"] >= 2 * n, got
    else:
        assert got == {"registered": 0, "failed": 0, "released": 0}


@pytest.mark.parametrize("spread,threads", [("1", 1), ("0", 1), ("1", 2)])
def test_metrics_count_spread_sends(cp_factory, spread, threads):
    """ringstore_sends_spread_total: with --spread-sends 1, one SET
    releasing 400 WAITs is one batch of 400 sends, and every other one past
    the first is made on another CPU: at least 199 of them. With io_uring the
    ring's kernel worker makes them; four such rounds keep it busy while more
    sends arrive, and still one worker thread runs them (iou-wrk-*: the
    ring's limit; without it the kernel started 2 in each of 6 runs). With
    epoll the reactor's helper thread (rs-spread-*) makes them. Every
    connection must read its own bytes, in order: the WAIT's answer, then a
    GET's value and a PING's echo sent after the release (their replies form
    a second large batch). No spread send and no worker with 0. With two
    reactors the waiters are split between them and each releases its own
    (the other's through a cross-reactor message, maybe in more than one
    batch): each reactor has at most one worker, named after its thread
    (iou-wrk-TID, rs-spread-TID), and more than a quarter of the sends are
    spread."""
    srv = cp_factory("--control-port", "0", "--spread-sends", spread, threads=threads)
    backend = backend_of(srv)
    worker = {"io_uring": "iou-wrk-", "epoll": "rs-spread-"}[backend]
    n, rounds = 400, 4
    waiters = [srv.raw(timeout=20) for _ in range(n)]
    setter = srv.raw()
    spread_n = []
    try:
        for r in range(rounds):
            key = f"/spread/go{r}".encode()
            before = metric(scrape(srv), "ringstore_sends_spread_total")
            park_and_release(waiters, setter, key)
            for i, c in enumerate(waiters):
                c.send(req("GET", s(key)) + req("PING", u32(1000 + i)))
            for i, c in enumerate(waiters):
                assert c.recv_bytes() == b"now", f"waiter {i}"
                assert c.recv_exact(4) == u32(1000 + i), f"waiter {i}: bytes out of order"
            spread_n.append(metric(scrape(srv), "ringstore_sends_spread_total") - before)
        workers = threads_named(srv, worker)
    finally:
        for c in waiters + [setter]:
            c.close()
    if spread == "1" and threads == 1:
        assert min(spread_n) >= 199, spread_n
        assert len(workers) == 1, workers
    elif spread == "1":
        assert min(spread_n) > n // 4, spread_n
        names = list(workers.values())
        reactors = set(threads_named(srv, "rs-reactor"))
        assert 1 <= len(workers) <= threads and len(set(names)) == len(names), names
        assert {nm.split("-")[-1] for nm in names} <= reactors, (names, reactors)
    else:
        assert spread_n == [0] * rounds, spread_n
        assert workers == {}, workers


@pytest.mark.skipif(bool(os.environ.get("RS_SPREAD_SENDS")),
                    reason="this pass sets --spread-sends; the default is tested without it")
@pytest.mark.parametrize("cpus,threads", [(2, 1), (1, 1), (2, 2)])
def test_default_spreads_only_with_a_spare_cpu(cp_factory, cpus, threads):
    """Without --spread-sends, sends are spread (past 256 in one batch) only
    where the affinity mask has more CPUs than there are reactors: one
    reactor on two CPUs spreads a SET that releases 1,200 WAITs; one reactor
    pinned to one CPU (taskset), or two reactors on two CPUs, do not. On
    epoll a helper thread (rs-spread-*) exists exactly when spreading is
    on."""
    mask = sorted(os.sched_getaffinity(0))
    if len(mask) < cpus:
        pytest.skip(f"needs {cpus} CPUs in the affinity mask, has {len(mask)}")
    wrap = ["taskset", "-c", str(mask[0])] if cpus == 1 else []
    srv = cp_factory("--control-port", "0", threads=threads, wrap=wrap)
    backend = backend_of(srv)
    n, key = 1200, b"/default-spread/go"
    waiters = [srv.raw(timeout=20) for _ in range(n)]
    setter = srv.raw()
    try:
        park_and_release(waiters, setter, key)
        spread = metric(scrape(srv), "ringstore_sends_spread_total")
        helpers = threads_named(srv, "rs-spread-")
    finally:
        for c in waiters + [setter]:
            c.close()
    on = cpus > threads
    if on:  # one batch of 1,200 sends (1,201 with the setter's): every other past 256
        assert spread >= (n - 256) // 2, spread
    else:
        assert spread == 0, spread
    assert len(helpers) == (threads if on and backend == "epoll" else 0), helpers


def test_metrics_count_writes_in_place(cp_factory):
    """ringstore_writes_in_place_total: a SET or MULTI_SET value of the same
    length as the live one is written inside its entry; other lengths,
    inserts and read-modify-writes replace it. One writer's counts are
    exact. Two writers racing on one key from two reactors may meet on the
    entry's lock (the loser replaces the entry instead), which is
    scheduling: what is behaviour is that each SET runs once, in place or
    replaced, and that no reader ever sees a torn value (every value is one
    repeated letter, so a torn read would show two letters).

    SET has no reply: a client that has sent its SETs does not know they
    have run, so every count is read after a request with a reply on each
    writer's own connection (one connection's requests run in order, and a
    write is counted before its reply goes out)."""
    import datetime
    import threading

    import torch.distributed as dist

    srv = cp_factory("--control-port", "0", threads=2)

    def counts():
        m = scrape(srv)
        return (metric(m, "ringstore_writes_in_place_total"),
                metric(m, "ringstore_requests_total", op="SET"))

    st = srv.client()
    st.set("hb", "0001")                      # insert
    for i in range(2, 12):
        st.set("hb", f"{i:04d}")              # 10 in place
    assert st.get("hb") == b"0011"
    st.set("hb", "12345")                     # another length: replaced
    st.multi_set(["a", "b", "hb"], ["x", "y", "54321"])  # 2 inserts, 1 in place
    st.multi_set(["a", "b"], ["p", "q"])      # 2 in place
    assert st.multi_get(["a", "b", "hb"]) == [b"p", b"q", b"54321"]
    # COMPARE_SET reads the value written in place and replaces it.
    assert st.compare_set("hb", "54321", "99999") == b"99999"
    assert st.compare_set("hb", "54321", "00000") == b"99999"
    st.set("n", "41")
    st.set("n", "42")                         # in place
    assert st.add("n", 1) == 43               # ADD reads it, replaces it
    in_place, sets = counts()
    assert in_place == 10 + 1 + 2 + 1

    clients = [dist.TCPStore(srv.host, srv.port, is_master=False,
                             timeout=datetime.timedelta(seconds=30))
               for _ in range(4)]
    clients[0].set("torn", "a" * 64)          # insert
    bad, stop = [], threading.Event()
    alphabets = {0: "abc", 1: "xyz"}

    def write(c, letters):
        for i in range(300):
            c.set("torn", letters[i % len(letters)] * 64)
        c.get("torn")  # a reply: every SET before it has run

    def read(c):
        while not stop.is_set():
            v = c.get("torn")
            if len(v) != 64 or len(set(v)) != 1:
                bad.append(v)

    writers = [threading.Thread(target=write, args=(clients[i], alphabets[i]))
               for i in (0, 1)]
    readers = [threading.Thread(target=read, args=(clients[i],)) for i in (2, 3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert bad == []
    assert clients[2].get("torn") in {l.encode() * 64 for l in "abcxyz"}
    raced, raced_sets = counts()
    assert raced_sets - sets == 1 + 600      # each SET ran once...
    assert in_place <= raced <= in_place + 600  # ...in place or replaced
    # Alone again, the key that the race left is written in place.
    clients[1].set("torn", "z" * 64)
    assert clients[1].get("torn") == b"z" * 64
    assert counts() == (raced + 1, raced_sets + 1)


def all_threads_stopped(pid: int) -> bool:
    """Every thread of @pid in state T (stopped), from /proc."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(st == "T" for st in states)


def test_recv_buffers_adapt(cp_factory):
    """io_uring keeps only as many receive buffers provided as the receives
    per batch need (ringstore_recv_buffers_provided_target): it shrinks to
    --recv-buffers-min while one client works alone; then 200 connections'
    requests all wait at once (sent while the server is stopped), so most
    receives find the ring empty (ENOBUFS). Those are re-armed, every
    request is answered right, and the ring grows back."""
    import signal

    srv = cp_factory("--control-port", "0", "--recv-buffers", "64",
                     "--recv-buffers-min", "16")
    backend = backend_of(srv)
    if backend != "io_uring":
        pytest.skip("the buffer ring is io_uring's")

    def gauge():
        return metric(scrape(srv), "ringstore_recv_buffers_provided_target")

    assert gauge() == 64
    # Halving takes 1024 quiet batches (recvbufs.h), 64 -> 16 two of them;
    # every request here is at least one batch.
    with srv.raw() as c:
        for i in range(2 * 1024 + 100):
            c.send(req("PING", u32(i)))
            assert c.recv_exact(4) == u32(i)
    assert gauge() == 16
    conns = [srv.raw() for _ in range(200)]
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        # kill() returns before the stop: wait until every thread is
        # stopped, or a running reactor would take some receives early.
        wait_until(lambda: all_threads_stopped(srv.proc.pid),
                   what="the server stopped")
        # Loopback delivers into the server's sockets during send().
        for i, c in enumerate(conns):
            c.send(req("SET", s(f"k{i}"), s(f"v{i}")) + req("GET", s(f"k{i}")))
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    for i, c in enumerate(conns):
        assert c.recv_bytes() == f"v{i}".encode()
        c.close()
    m = scrape(srv)
    assert metric(m, "ringstore_receive_buffer_exhausted_total") > 0
    assert metric(m, "ringstore_recv_buffers_provided_target") > 16


def test_metrics_per_reactor(cp_factory):
    srv = cp_factory("--control-port", "0", threads=3)
    m = scrape(srv)
    assert metric(m, "ringstore_reactors") == 3
    for r in ("0", "1", "2"):
        assert ("ringstore_reactor_loop_iterations_total", (("reactor", r),)) in m


def test_metrics_follow_clients(cp):
    hc = connect(cp)
    try:
        _metrics_follow_clients(cp, hc)
    finally:
        hc.close()


def _metrics_follow_clients(cp, hc):
    m0 = scrape(cp, hc)
    c = cp.raw()
    c.send(req("SET", s(b"/a"), s(b"xyz")) + req("SET", s(b"/b"), s(b"1"))
           + req("SET", s(b"/c"), s(b"2")) + req("ADD", s(b"/n"), i64(1)))
    assert c.recv_i64() == 1
    c.send(req("QUEUE_PUSH", s(b"/q"), s(b"item")) + req("PING", u32(3)))
    assert c.recv_exact(4) == u32(3)
    m1 = scrape(cp, hc)
    assert metric(m1, "ringstore_connections_active") == metric(m0, "ringstore_connections_active") + 1
    assert (metric(m1, "ringstore_connections_accepted_total")
            == metric(m0, "ringstore_connections_accepted_total") + 1)
    assert metric(m1, "ringstore_requests_total", op="SET") - metric(m0, "ringstore_requests_total", op="SET") == 3
    assert metric(m1, "ringstore_requests_total", op="ADD") - metric(m0, "ringstore_requests_total", op="ADD") == 1
    assert metric(m1, "ringstore_requests_total", op="VALIDATE") >= 1
    assert metric(m1, "ringstore_keys") == 4
    assert metric(m1, "ringstore_stored_bytes") == (2 + 3) + (2 + 1) * 2 + (2 + 1)
    assert metric(m1, "ringstore_queue_items") == 1
    assert metric(m1, "ringstore_received_bytes_total") > metric(m0, "ringstore_received_bytes_total")
    assert metric(m1, "ringstore_sent_bytes_total") > metric(m0, "ringstore_sent_bytes_total")
    assert (metric(m1, "ringstore_reactor_loop_iterations_total", reactor="0")
            > metric(m0, "ringstore_reactor_loop_iterations_total", reactor="0"))

    eof0 = metric(m1, "ringstore_connections_closed_total", reason="eof")
    c.close()
    m2 = wait_until(lambda: (lambda m: m if metric(m, "ringstore_connections_closed_total", reason="eof")
                             == eof0 + 1 else None)(scrape(cp, hc)), what="closed{reason=eof} to grow")
    assert metric(m2, "ringstore_connections_active") == metric(m0, "ringstore_connections_active")

    # a protocol error is counted by kind
    bad = cp.raw(validate=False)
    bad.send(req("VALIDATE", u32(0xDEADBEEF)))
    bad.expect_eof()
    bad.close()
    wait_until(lambda: metric(scrape(cp, hc), "ringstore_protocol_errors_total", kind="bad_magic") == 1,
               what="protocol_errors{kind=bad_magic}")


# --------------------------------------------------------------------------------------
# Waiters and barriers during a pending rendezvous
# --------------------------------------------------------------------------------------

def peer_name(conn) -> str:
    host, port = conn.sock.getsockname()[:2]
    return f"{host}:{port}"


def test_waiters_and_barriers_views(cp):
    ranks = [cp.raw() for _ in range(3)]
    waiter = cp.raw()
    try:
        # Two ranks joined the rendezvous counter, two of three reached the barrier.
        ranks[0].send(req("ADD", s(b"init/"), i64(1)))
        assert ranks[0].recv_i64() == 1
        ranks[1].send(req("ADD", s(b"init/"), i64(1)))
        assert ranks[1].recv_i64() == 2
        ranks[0].send(req("BARRIER", s(b"/rdzv/barrier"), i64(3)))
        ranks[1].send(req("BARRIER", s(b"/rdzv/barrier"), i64(3)))
        # Someone waits for two keys, one of which exists.
        waiter.send(req("SET", s(b"/rdzv/have"), s(b"1"))
                    + req("WAIT", u64(2), s(b"/rdzv/have"), s(b"/rdzv/MASTER_ADDR")))
        # An elastic-style barrier: counted by num_members, awaited on last_member.
        ranks[2].send(req("ADD", s(b"/el/num_members"), i64(1)))
        assert ranks[2].recv_i64() == 1
        ranks[2].send(req("WAIT", u64(1), s(b"/el/last_member")))

        def barriers_ready():
            b = get_json(cp, "/handler/barriers")
            bars = [x for x in b["barriers"] if x["key"] == "/rdzv/barrier"]
            return b if bars and bars[0]["waiting"] == 2 else None

        b = wait_until(barriers_ready, what="the barrier view")
        bar = [x for x in b["barriers"] if x["key"] == "/rdzv/barrier"][0]
        assert bar["arrived"] == 2 and bar["world_size"] == 3
        assert {p["peer"] for p in bar["peers"]} == {peer_name(ranks[0]), peer_name(ranks[1])}
        for p in bar["peers"]:
            assert p["waiting_s"] >= 0 and p["barrier_world_size"] == 3
            assert abs(p["since"] - time.time()) < 60
        counters = {x["key"]: x for x in b["counters"]}
        assert counters["init/"]["value"] == 2
        el = counters["/el/num_members"]
        assert el["value"] == 1 and el["awaited_key"] == "/el/last_member"
        assert el["waiting"] == 1 and el["peers"][0]["peer"] == peer_name(ranks[2])

        w = wait_until(lambda: (lambda v: v if v["waited_keys"] == 3 else None)(
            get_json(cp, "/handler/waiters")), what="the waiters view")
        keys = {x["key"]: x for x in w["keys"]}
        assert set(keys) == {"/rdzv/barrier", "/rdzv/MASTER_ADDR", "/el/last_member"}
        assert keys["/rdzv/barrier"]["waiters"] == 2
        assert keys["/rdzv/MASTER_ADDR"]["peers"][0]["peer"] == peer_name(waiter)
        assert keys["/rdzv/MASTER_ADDR"]["peers"][0]["pending_keys"] == 1
        assert w["waits"] == 4
        assert metric(scrape(cp), "ringstore_waiters") == 4

        # The last rank arrives: everyone is released and the views empty.
        ranks[2].send(req("SET", s(b"/el/last_member"), s(b"1")))
        assert ranks[2].recv_exact(1) == b"\x00"
        ranks[2].send(req("BARRIER", s(b"/rdzv/barrier"), i64(3)))
        waiter.send(req("SET", s(b"/rdzv/MASTER_ADDR"), s(b"10.0.0.1")))
        for c in (ranks[0], ranks[1], ranks[2], waiter):
            assert c.recv_exact(1) == b"\x00"
        w = get_json(cp, "/handler/waiters")
        assert w["keys"] == [] and w["waits"] == 0
        assert get_json(cp, "/handler/barriers")["barriers"] == []
    finally:
        for c in ranks + [waiter]:
            c.close()


def test_waiters_view_with_torch_clients(cp):
    """A real PyTorch client blocked in wait() shows up in the waiters view."""
    import threading
    from datetime import timedelta

    dist = pytest.importorskip("torch.distributed")

    holder = dist.TCPStore("127.0.0.1", cp.port, is_master=False, timeout=timedelta(seconds=20))
    done = threading.Event()

    def blocked():
        holder.wait(["ready"])
        done.set()

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    w = wait_until(lambda: (lambda v: v if v["waited_keys"] == 1 else None)(
        get_json(cp, "/handler/waiters")), what="torch's wait in the view")
    assert w["keys"][0]["key"] == "/ready"
    setter = dist.TCPStore("127.0.0.1", cp.port, is_master=False, timeout=timedelta(seconds=20))
    setter.set("ready", "1")
    t.join(10)
    assert done.is_set()
    assert get_json(cp, "/handler/waiters")["waited_keys"] == 0
    del holder, setter
