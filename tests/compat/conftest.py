"""Fixtures for the PyTorch-compatibility suite.

Every behaviour test talks to a store *server* through unmodified PyTorch clients
(``torch.distributed.TCPStore(host, port, is_master=False)``) or raw sockets.

Targets (env ``RINGSTORE_TARGET``):
  ringstore (default)  the ringstore binary: $RINGSTORE_BIN, else
                       ${RS_BUILD_DIR:-<repo>/build}/bin/ringstore
  torch                PyTorch's own libuv TCPStore server, hosted in a helper
                       Python process; proves the tests themselves are right.
                       Tests marked ``ringstore_only`` (logs, stats, limits, bad
                       input) are skipped for this target.

Env ``RS_THREADS`` sets ringstore's reactor count (default 1), ``RS_IO`` its
I/O backend (``--io auto|uring|epoll``; unset: ringstore's default, auto),
``RS_FIXED_FILES`` its ``--fixed-files`` (unset: the default, off) and
``RS_SPREAD_SENDS`` its ``--spread-sends`` (unset: the default).

Every test gets a fresh server (``server`` fixture) so key counts are exact.
Each test runs under a watchdog (default 60 s, ``@pytest.mark.timeout_s(N)``):
on expiry it dumps all thread stacks and SIGKILLs the servers and helper
processes the test started, so a client blocked in recv() gets EOF and the test
fails instead of hanging the suite.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from procs import (kill_group, reap, register_proc, spawn,  # noqa: E402,F401 (re-exported)
                   unregister_proc, watchdog)
HERE = Path(__file__).resolve().parent
TARGET = os.environ.get("RINGSTORE_TARGET", "ringstore").strip().lower()
if TARGET not in ("ringstore", "torch"):
    raise RuntimeError(f"RINGSTORE_TARGET must be 'ringstore' or 'torch', not {TARGET!r}")

DEFAULT_TEST_TIMEOUT = float(os.environ.get("RS_TEST_TIMEOUT", "60"))
CLIENT_TIMEOUT = datetime.timedelta(seconds=10)

# Keep worker subprocesses light: one thread each, no GPU probing noise.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def ringstore_bin() -> Path:
    env = os.environ.get("RINGSTORE_BIN")
    if env:
        return Path(env)
    build = os.environ.get("RS_BUILD_DIR") or str(ROOT / "build")
    return Path(build) / "bin" / "ringstore"


def io_flags(flags=()) -> list[str]:
    """["--io", $RS_IO] (the I/O backend under test) unless RS_IO is unset or
    @flags choose a backend themselves; and ["--fixed-files", $RS_FIXED_FILES]
    and ["--spread-sends", $RS_SPREAD_SENDS] likewise."""
    out = []
    for env, flag in (("RS_IO", "--io"), ("RS_FIXED_FILES", "--fixed-files"),
                      ("RS_SPREAD_SENDS", "--spread-sends")):
        v = os.environ.get(env)
        if v and not any(str(f).startswith(flag) for f in flags):
            out += [flag, v]
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "ringstore_only: needs ringstore logs/stats/limits")
    config.addinivalue_line("markers", "timeout_s(n): per-test watchdog in seconds")
    config.addinivalue_line("markers", "slow: multi-process / torchrun tests")


def pytest_report_header(config):
    if TARGET == "torch":
        import torch

        return f"ringstore compat: target=torch (libuv TCPStore server, torch {torch.__version__})"
    return f"ringstore compat: target=ringstore ({ringstore_bin()})"


def pytest_collection_modifyitems(config, items):
    if TARGET != "torch":
        return
    skip = pytest.mark.skip(reason="inspects ringstore logs/stats/limits; not for RINGSTORE_TARGET=torch")
    for item in items:
        if item.get_closest_marker("ringstore_only"):
            item.add_marker(skip)


# --------------------------------------------------------------------------------------
# The watchdog (tests/procs.py)
# --------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _watchdog(request):
    with watchdog(request, DEFAULT_TEST_TIMEOUT, on_expire=_TorchHost.kill):
        yield


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

_TORCH_HOST_SRC = r"""
import sys, datetime
import torch.distributed as dist
stores = {}
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "new":
        s = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=30), use_libuv=True)
        stores[s.port] = s
        print("port", s.port, flush=True)
    elif cmd[0] == "close":
        stores.pop(int(cmd[1]), None)
        print("closed", flush=True)
"""


class _TorchHost:
    """One helper process hosting PyTorch's own TCPStore servers (one per 'new')."""

    proc: subprocess.Popen | None = None
    lock = threading.Lock()

    @classmethod
    def _readline(cls, timeout=60.0) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(cls.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise RuntimeError("torch store host did not answer")
        finally:
            sel.close()
        line = cls.proc.stdout.readline()
        if not line:
            raise RuntimeError("torch store host exited")
        return line.strip()

    @classmethod
    def new_port(cls) -> int:
        with cls.lock:
            if cls.proc is None or cls.proc.poll() is not None:
                cls.proc = subprocess.Popen(
                    [sys.executable, "-c", _TORCH_HOST_SRC],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
                assert cls._readline() == "ready"
            cls.proc.stdin.write("new\n")
            cls.proc.stdin.flush()
            line = cls._readline()
            assert line.startswith("port "), line
            return int(line.split()[1])

    @classmethod
    def close_port(cls, port: int) -> None:
        with cls.lock:
            if cls.proc is None or cls.proc.poll() is not None:
                return
            try:
                cls.proc.stdin.write(f"close {port}\n")
                cls.proc.stdin.flush()
                cls._readline(timeout=10)
            except (OSError, RuntimeError):
                pass

    @classmethod
    def kill(cls) -> None:
        p = cls.proc
        if p is not None and p.poll() is None:
            kill_group(p)

    @classmethod
    def shutdown(cls) -> None:
        p = cls.proc
        if p is None:
            return
        try:
            p.stdin.close()
            p.wait(timeout=10)
        except Exception:
            kill_group(p)
        cls.proc = None


_STATS_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(-?\d+)")


class Server:
    """A running store server that tests connect to."""

    def __init__(self, kind: str, host: str, port: int, proc=None, log_path=None, out_path=None):
        self.kind = kind
        self.host = host
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.out_path = out_path
        self.exit_code: int | None = None
        self.listen_addr = host
        self._clients = []

    def __repr__(self):
        return f"<{self.kind} server {self.host}:{self.port}>"

    # -- clients -------------------------------------------------------------------
    def client(self, world_size=None, timeout=CLIENT_TIMEOUT, wait_for_workers=True, **kw):
        import torch.distributed as dist

        if not isinstance(timeout, datetime.timedelta):
            timeout = datetime.timedelta(seconds=timeout)
        s = dist.TCPStore(
            self.host,
            self.port,
            world_size=world_size,
            is_master=False,
            timeout=timeout,
            wait_for_workers=wait_for_workers,
            **kw,
        )
        self._clients.append(s)
        return s

    def raw(self, validate: bool = True, timeout: float = 5.0) -> "RawConn":
        c = RawConn(self.host, self.port, timeout)
        if validate:
            c.handshake()
        return c

    # -- ringstore introspection ---------------------------------------------------
    def log(self) -> str:
        if not self.log_path:
            return ""
        return Path(self.log_path).read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 5.0) -> str:
        """Wait until a stderr line matches regex pattern; return that line."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}; log tail:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, n=30) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the server; return its exit code (ringstore) or None (torch)."""
        if self.kind == "torch":
            for c in self._clients:
                del c
            self._clients.clear()
            _TorchHost.close_port(self.port)
            return None
        if self.exit_code is not None:
            return self.exit_code
        self._clients.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()
            self.exit_code = None
        unregister_proc(self.proc)
        return self.exit_code

    def stats(self) -> dict[str, int]:
        """Stop the server and parse its final stderr line (`name=N` pairs)."""
        rc = self.stop()
        assert rc == 0, f"ringstore exited with {rc} on SIGTERM; log tail:\n{self.log_tail()}"
        lines = [l for l in self.log().splitlines() if l.strip()]
        assert lines, "ringstore wrote nothing to stderr"
        last = lines[-1]
        assert "proto_errors" in last, f"last stderr line is not the stats summary: {last!r}"
        head, _, tail = last.partition("proto_errors")
        stats = {k: int(v) for k, v in _STATS_RE.findall(head)}
        # the reason counters after 'proto_errors' win over same-named counters before it
        stats.update({k: int(v) for k, v in _STATS_RE.findall(tail)})
        return stats


def start_ringstore_args(args: list[str], tmp_path: Path, name: str = "ringstore",
                         wrap: list[str] = (), **kw):
    """Run the ringstore binary with @args (plus the backend under test, RS_IO),
    under the command @wrap if one is given (it must exec the server).

    Returns (proc, port, stderr path) once it prints its listening line, or
    (proc, None, stderr path) if it exits first (a start-up error)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = spawn([*wrap, str(ringstore_bin()), *args, *io_flags(args)], stdout=fo, stderr=fe,
                  stdin=subprocess.DEVNULL, **kw)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = out.read_text()
        if text.endswith("\n"):
            m = re.match(r"^ringstore listening on (\S+):(\d+)$", text.splitlines()[0])
            assert m, text
            return p, int(m.group(2)), err
        if p.poll() is not None:
            return p, None, err
        time.sleep(0.01)
    kill_group(p)
    raise AssertionError(f"{name}: neither listening nor exited: {err.read_text()}")


def _start_ringstore(tmp_path: Path, threads: int, extra: list[str], bind: str | None = "127.0.0.1",
                     listen_sock: socket.socket | None = None, wrap: list[str] = ()) -> Server:
    binary = ringstore_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"ringstore binary not found at {binary} (build it, set RINGSTORE_BIN, "
            "or run with RINGSTORE_TARGET=torch)",
            pytrace=False,
        )
    idx = len(list(tmp_path.glob("ringstore-*.err")))
    err = tmp_path / f"ringstore-{idx}.err"
    out = tmp_path / f"ringstore-{idx}.out"
    args = [*wrap, str(binary)]
    pass_fds = ()
    if listen_sock is not None:
        args += ["--listen-fd", str(listen_sock.fileno())]
        pass_fds = (listen_sock.fileno(),)
    else:
        args += ["--port", "0"]
        if bind is not None:
            args += ["--bind", bind]
    args += ["--log-level", "debug", "--threads", str(threads), *io_flags(extra), *extra]
    with open(err, "wb") as ferr, open(out, "wb") as fout:
        proc = spawn(args, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
    rx = re.compile(r"^ringstore listening on (\S+):(\d+)\s*$")
    deadline = time.monotonic() + 10
    while True:
        text = out.read_text(errors="replace")
        lines = text.splitlines()
        if lines and text.endswith("\n"):
            m = rx.match(lines[0])
            assert m, f"unexpected first stdout line {lines[0]!r}"
            assert len(lines) == 1, f"ringstore printed more than one stdout line: {lines!r}"
            port = int(m.group(2))
            assert port > 0
            srv = Server("ringstore", "127.0.0.1", port, proc, err, out)
            srv.listen_addr = m.group(1)
            return srv
        if proc.poll() is not None:
            pytest.fail(f"ringstore exited with {proc.returncode} before listening; "
                        f"args={args}\nstderr:\n{err.read_text(errors='replace')}", pytrace=False)
        if time.monotonic() > deadline:
            kill_group(proc)
            pytest.fail(f"ringstore did not print its listening line within 10s; "
                        f"stderr:\n{err.read_text(errors='replace')}", pytrace=False)
        time.sleep(0.01)


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(*flags, threads=1, bind="127.0.0.1", listen_sock=None, wrap=()) -> Server.

    Flags, bind and listen_sock are ignored for target torch. bind=None omits --bind
    (ringstore's default, dual-stack '::'); listen_sock is passed as --listen-fd.
    The default thread count comes from env RS_THREADS (else 1), the backend
    from RS_IO. wrap is a command (and arguments) that runs the server.
    """
    started: list[Server] = []

    def make(*flags, threads: int | None = None, bind: str | None = "127.0.0.1",
             listen_sock: socket.socket | None = None, wrap: list[str] = ()) -> Server:
        if threads is None:
            threads = int(os.environ.get("RS_THREADS", "1"))
        if TARGET == "torch":
            s = Server("torch", "127.0.0.1", _TorchHost.new_port())
        else:
            s = _start_ringstore(tmp_path, threads, [str(f) for f in flags], bind, listen_sock, wrap)
        started.append(s)
        return s

    yield make
    problems = []
    for s in started:
        if s.kind == "ringstore" and s.exit_code is None:
            if s.proc.poll() is not None:
                problems.append(f"{s} died during the test with code {s.proc.returncode}; "
                                f"log tail:\n{s.log_tail()}")
                unregister_proc(s.proc)
                continue
            rc = s.stop()
            if rc != 0:
                problems.append(f"{s} exited with {rc} on SIGTERM; log tail:\n{s.log_tail()}")
        elif s.kind == "torch":
            s.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


@pytest.fixture
def store(server):
    """A plain client (no world_size) of a fresh server."""
    return server.client()


def pytest_sessionfinish(session, exitstatus):
    _TorchHost.shutdown()


# --------------------------------------------------------------------------------------
# Raw wire helpers (docs/protocol.md §1, §2, §12)
# --------------------------------------------------------------------------------------

MAGIC = 0x3C85F7CE
OP = dict(VALIDATE=0, SET=1, COMPARE_SET=2, GET=3, ADD=4, CHECK=5, WAIT=6, GETNUMKEYS=7,
          DELETE_KEY=8, APPEND=9, MULTI_GET=10, MULTI_SET=11, CANCEL_WAIT=12, PING=13,
          QUEUE_PUSH=14, QUEUE_POP=15, QUEUE_LEN=16, LIST_KEYS=17, BARRIER=18)


def u8(v): return struct.pack("<B", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def i64(v): return struct.pack("<q", v)
def s(b): return u64(len(b)) + (b if isinstance(b, bytes) else b.encode())


def req(op: str, *parts: bytes) -> bytes:
    return u8(OP[op]) + b"".join(parts)


VALIDATE = req("VALIDATE", u32(MAGIC))


class RawConn:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)

    def handshake(self, nonce=0x1234ABCD):
        self.send(VALIDATE + req("PING", u32(nonce)))
        assert self.recv_exact(4) == u32(nonce)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_i64(self) -> int:
        return struct.unpack("<q", self.recv_exact(8))[0]

    def recv_bytes(self) -> bytes:
        n = struct.unpack("<Q", self.recv_exact(8))[0]
        return self.recv_exact(n)

    def expect_eof(self, timeout: float = 5.0) -> None:
        """Assert the server closes this connection (EOF or RST) without sending anything."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return
        except socket.timeout:
            raise AssertionError(f"server did not close the connection within {timeout}s")
        assert data == b"", f"expected EOF, got {data[:64]!r}"

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
