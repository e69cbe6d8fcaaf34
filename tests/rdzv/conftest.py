# SPDX-License-Identifier: MIT
"""Fixtures for the rendezvous-backend suite (tests/rdzv).

``server`` is a store server per target, shared by the session (every test
uses its own rendezvous run id), parametrized over two targets:
  ringstore  ${RS_BUILD_DIR:-<repo>/build}/bin/ringstore --port 0 --bind 127.0.0.1
             (or $RINGSTORE_BIN), its port read from "ringstore listening on";
  torch      PyTorch's own libuv TCPStore server (scripts/torch_store_server.py),
             which proves the backend needs nothing but PyTorch's protocol.
``RINGSTORE_TARGET=ringstore|torch`` restricts the run to one target.
``proxied`` is that server behind a StoreProxy (proxy.py, its own process)
that a test can take down and bring back, or make lose one reply: a store
restart under the clients, with ``direct()`` to change keys behind their
backs meanwhile. A test that restarts the real server behind the proxy
needs only ``proxy.down()`` before and ``proxy.up(new_port)`` after.
Tests that use neither (test_state_machine.py, test_client.py) run once.

The checkout's python/ directory goes first on sys.path and on the PYTHONPATH
of every child (agents, workers), so the code under test is the checkout's;
torchrun still finds the backend only through the installed package's
``torchrun.handlers`` entry point (``pip install .``, or scripts/deps), which the
session checks first.

Each test runs under a watchdog (``@pytest.mark.timeout_s(N)``, default 60 s):
on expiry it dumps the stacks and kills every process group the test started.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYDIR = ROOT / "python"
sys.path.insert(0, str(PYDIR))
sys.path.insert(0, str(ROOT / "tests"))
from procs import kill_group, spawn, unregister_proc, watchdog  # noqa: E402
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(PYDIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGETS = [t for t in ("ringstore", "torch")
           if os.environ.get("RINGSTORE_TARGET", t).strip().lower() == t]


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(n): per-test watchdog in seconds")


def pytest_sessionstart(session):
    eps = importlib.metadata.entry_points(group="torchrun.handlers")
    if not any(e.name == "ringstore" for e in eps):
        pytest.exit("the ringstore package is not installed (pip install ., "
                    "or scripts/deps): torchrun cannot find --rdzv-backend=ringstore", 2)


def ringstore_bin() -> Path:
    if os.environ.get("RINGSTORE_BIN"):
        return Path(os.environ["RINGSTORE_BIN"])
    return Path(os.environ.get("RS_BUILD_DIR") or ROOT / "build") / "bin" / "ringstore"


@pytest.fixture(autouse=True)
def _watchdog(request):
    with watchdog(request, 60.0):
        yield


class Server:
    def __init__(self, kind, host, port, proc, log):
        self.kind, self.host, self.port, self.proc, self.log = kind, host, port, proc, log

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, timeout=30.0):
        import datetime

        import torch.distributed as dist
        return dist.TCPStore(self.host, self.port, is_master=False, wait_for_workers=False,
                             timeout=datetime.timedelta(seconds=timeout))

    def __repr__(self):
        return f"<{self.kind} {self.endpoint}>"


def _start(kind: str, tmp: Path) -> Server:
    if kind == "ringstore":
        binary = ringstore_bin()
        if not os.access(binary, os.X_OK):
            pytest.fail(f"no ringstore binary at {binary} (build it or set RS_BUILD_DIR)",
                        pytrace=False)
        args = [str(binary), "--port", "0", "--bind", "127.0.0.1", "--threads",
                os.environ.get("RS_THREADS", "1")]
        rx = re.compile(r"^ringstore listening on (\S+):(\d+)$")
    else:
        args = [sys.executable, str(ROOT / "scripts" / "torch_store_server.py"),
                "--host", "127.0.0.1", "--port", "0"]
        rx = re.compile(r"^torch-store \(libuv\) listening on (\S+):(\d+)$")
    log = tmp / f"{kind}-server.log"
    with open(log, "wb") as err:
        p = spawn(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()  # blocks until the server listens (or exits)
    m = rx.match(line)
    if not m:
        kill_group(p)
        pytest.fail(f"{kind} server did not start: {line!r}\n{log.read_text()[-2000:]}",
                    pytrace=False)
    return Server(kind, "127.0.0.1", int(m.group(2)), p, log)


class Proxied(Server):
    """``server`` behind a StoreProxy (tests/rdzv/proxy.py): ``endpoint`` and
    ``client()`` go through the proxy, ``direct()`` to the server itself (to
    change keys behind the clients' backs while the proxy is down)."""

    def __init__(self, server: Server, proxy):
        super().__init__(server.kind, proxy.host, proxy.port, server.proc, server.log)
        self.server, self.proxy = server, proxy

    def direct(self, timeout=30.0):
        return self.server.client(timeout)


@pytest.fixture
def proxied(server):
    from proxy import StoreProxy

    p = StoreProxy(server.host, server.port, spawn=spawn)
    try:
        yield Proxied(server, p)
    finally:
        p.close()


@pytest.fixture(scope="session", params=TARGETS)
def server(request, tmp_path_factory) -> Server:
    """One server per target for the session: every test uses its own run id."""
    s = _start(request.param, tmp_path_factory.mktemp(request.param))
    unregister_proc(s.proc)  # outlives each test's process cleanup
    yield s
    if s.proc.poll() is not None:
        pytest.fail(f"{s} died during the test (rc={s.proc.returncode}):\n"
                    f"{s.log.read_text()[-2000:]}", pytrace=False)
    s.proc.send_signal(signal.SIGTERM)
    try:
        s.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(s.proc)
